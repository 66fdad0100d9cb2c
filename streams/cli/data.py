"""``pairstream generate`` and ``replay``: write a synthetic marketplace, produce files to Kafka."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streams.cli.common import command, settings_from


def register(sub) -> None:
    p = command(sub, "generate", cmd_generate, help="write a synthetic marketplace: items, clicks, truth",
                description="Synthetic second-hand marketplace with ground-truth "
                            "compatibility (items.jsonl, clicks.jsonl, truth.jsonl).")
    p.add_argument("--items", type=int, default=2000, help="catalogue size")
    p.add_argument("--users", type=int, default=500, help="number of users")
    p.add_argument("--events", type=int, default=50000, help="number of click events")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed, same files)")
    p.add_argument("--out", default="data/synthetic", help="output directory")
    p = command(sub, "replay", cmd_replay, help="produce JSON-lines files to Kafka",
                description="Produce items (key item_id) then clicks (key user_id), "
                            "line by line, with a progress bar.")
    p.add_argument("--clicks", help="clicks JSON lines")
    p.add_argument("--items", help="items JSON lines (sent first)")
    p.add_argument("--rate", type=float, help="clicks per second (default: as fast as possible)")


def cmd_generate(args) -> int:
    from streams.dev.synthetic import write_dataset

    counts = write_dataset(Path(args.out), args.items, args.users, args.events, args.seed)
    print(json.dumps({"out": args.out, **counts}))
    return 0

def cmd_replay(args) -> int:
    from streams.core.topics import ensure_topics
    from streams.dev.replay import replay

    settings = settings_from(args)
    if settings.embedded_kafka:
        print("replay needs a running broker: set PAIRSTREAM_KAFKA_BOOTSTRAP "
              "(the embedded broker lives only as long as the process that starts it; "
              "`pairstream demo` replays into its own)", file=sys.stderr)
        return 2
    ensure_topics(settings.kafka_bootstrap, settings)
    counts = replay(
        settings.kafka_bootstrap,
        Path(args.clicks) if args.clicks else None,
        Path(args.items) if args.items else None,
        settings.topic_clicks, settings.topic_items, args.rate,
    )
    print(json.dumps(counts))
    return 0
