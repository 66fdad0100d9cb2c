"""What every command shares: its settings, from ``--config`` and ``PAIRSTREAM_*``."""

from __future__ import annotations

from streams.core.config import Settings


def settings_from(args) -> Settings:
    settings = Settings.load(args.config)
    if getattr(args, "data_dir", None):
        settings = settings.replace(data_dir=args.data_dir)
    return settings


def command(sub, name: str, func, *, help: str, description: str, data_dir: bool | str = False):
    """One subcommand: its parser, the function that runs it and, where it reads the data
    directory, ``--data-dir`` (``True`` for the usual help, or a help string of its own)."""
    parser = sub.add_parser(name, help=help, description=description)
    if data_dir:
        parser.add_argument("--data-dir", help="override PAIRSTREAM_DATA_DIR" if data_dir is True else data_dir)
    parser.set_defaults(func=func)
    return parser
