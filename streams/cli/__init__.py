"""``pairstream``: the command line of the whole system, one module per command group.

Every command reads the same settings (``PAIRSTREAM_*`` variables, ``--config FILE``);
with none set, everything runs embedded (Tansu broker + chDB) on this machine. Each group's
module registers its parsers and imports what its commands need only when they run, so
``--help`` stays fast and torch-free.
"""

from __future__ import annotations

import argparse
import logging
import sys

from streams.cli import bench, data, docs, labels, lag, models, settings, training, worker

EPILOG = """Settings come from PAIRSTREAM_* environment variables or a TOML file (--config);
`pairstream settings` lists every one. With none set, Kafka is an embedded Tansu broker and ClickHouse
is chDB under .pairstream/ (the embedded mode)."""

GROUPS = (data, worker, bench, training, models, lag, labels, settings, docs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pairstream",
        description="Learn which products go well together from live clicks: "
                    "Kafka -> pair counts -> LLM labels -> distilled student -> scored pair tables.",
        epilog=EPILOG,
    )
    parser.add_argument("--config", help="TOML settings file (else PAIRSTREAM_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
