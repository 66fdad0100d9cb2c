"""``pairstream lag``: consumer lag per group and partition, with Burrow statuses."""

from __future__ import annotations

import json
import sys

from streams.cli.common import command, settings_from


def register(sub) -> None:
    p = command(sub, "lag", cmd_lag, help="consumer lag per group and partition, with Burrow statuses",
                description="""Committed offset, end offset, lag, consume rate and an estimate in seconds per
                    group and partition, judged OK / WARN / STALL / STOP / REWIND by Burrow's rules
                    over a window of samples (see streams/ops/lag.py). Exit status 1 if any
                    partition is not OK.""")
    p.add_argument("--group", help="one consumer group (default: all)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--samples", type=int, default=4, help="samples before printing (one-shot)")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between samples")
    p.add_argument("--window", type=int, default=10, help="samples judged per partition")


def cmd_lag(args) -> int:
    import time

    from streams.ops.lag import LagSampler, format_table

    settings = settings_from(args)
    if settings.embedded_kafka:
        print("lag needs a running broker: set PAIRSTREAM_KAFKA_BOOTSTRAP (the demo prints "
              "its lag table itself)", file=sys.stderr)
        return 2
    sampler = LagSampler(settings.kafka_bootstrap)
    try:
        groups = [args.group] if args.group else sampler.groups()
        taken = 0
        while True:
            sampler.sample(groups)
            taken += 1
            if args.watch:
                rows = sampler.table(args.window)
                print("\033[2J\033[H" + format_table(rows), flush=True)
            elif taken >= args.samples:
                break
            time.sleep(args.interval)
        rows = sampler.table(args.window)
        if args.json:
            print(json.dumps(rows))
        else:
            print(format_table(rows))
        return 0 if all(r["status"] == "OK" for r in rows) else 1
    except KeyboardInterrupt:
        return 0
    finally:
        sampler.close()
