"""``pairstream demo``: generator -> replay -> Kafka -> Faust worker -> ClickHouse, with a
live view and a summary. Runs on the embedded defaults; leaves no process behind."""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from .config import Settings
from .runtime import stack


def run_demo(settings: Settings, args) -> int:
    from .replay import replay
    from .synthetic import write_dataset

    data_dir = Path(settings.data_dir)
    if settings.embedded_clickhouse and settings.chdb_path.exists():
        shutil.rmtree(settings.chdb_path)  # the embedded broker starts empty: so do the tables
    out = data_dir / "demo-data"
    t0 = time.time()
    counts = write_dataset(out, args.items, args.users, args.events, args.seed)
    print(f"[1/3] generated {counts['items']} items, {counts['clicks']} clicks, "
          f"{counts['truth_pairs']} truth pairs in {out} ({time.time() - t0:.1f}s)")
    with stack(settings) as (bootstrap, storage):
        print(f"[2/3] embedded stack up: Kafka {bootstrap}, chDB {settings.chdb_path}")
        replay_error: list[BaseException] = []

        def produce() -> None:
            try:
                replay(bootstrap, out / "clicks.jsonl", out / "items.jsonl",
                       settings.topic_clicks, settings.topic_items, progress=False)
            except BaseException as exc:  # noqa: BLE001 - reported below
                replay_error.append(exc)

        producer = threading.Thread(target=produce, name="replay", daemon=True)
        producer.start()
        summary = asyncio.run(_stream(settings, bootstrap, storage, counts["clicks"]))
        producer.join(timeout=30)
        if replay_error:
            print(f"replay failed: {replay_error[0]}", file=sys.stderr)
            return 1
        print("[3/3] done: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
        _print_top_pairs(storage)
        _print_labels(storage)
    return 0


async def _stream(settings: Settings, bootstrap: str, storage, expected: int) -> dict:
    from .app import create_app

    app = create_app(settings, bootstrap, storage, web=False)
    await app.start()
    runtime = app.runtime
    started = time.time()
    try:
        with tqdm(total=expected, desc="streaming", unit="ev") as bar:
            while True:
                await asyncio.sleep(0.5)
                ingest = runtime.ingest
                done = ingest.totals["events"] if ingest else 0
                bar.n = done
                bar.set_postfix(pairs=ingest.totals["pairs"] if ingest else 0,
                                catalogue=len(runtime.catalogue))
                bar.refresh()
                if done >= expected or time.time() - started > 600:
                    break
        totals = dict(runtime.ingest.totals)
        await runtime.ingest.checkpoint()  # route what the last batches touched
        await runtime.ingest.drain()
        routed = runtime.ingest.router.routed_total
        with tqdm(total=routed, desc="labelling", unit="pair") as bar:
            deadline = time.time() + 300
            while runtime.pairs_handled < routed and time.time() < deadline:
                await asyncio.sleep(0.5)
                bar.n = runtime.pairs_handled
                bar.refresh()
            bar.n = runtime.pairs_handled
            bar.refresh()
    finally:
        await app.stop()
    seconds = time.time() - started
    return {"events": totals.get("events", 0), "invalid": totals.get("invalid", 0),
            "pair_rows": totals.get("pairs", 0), "routed": routed,
            "labelled": runtime.pairs_handled, "seconds": round(seconds, 1)}


def _print_top_pairs(storage) -> None:
    rows = storage.query_rows(
        f"""SELECT c.item_a, c.item_b, sum(c.count) AS n,
                   any(ia.title) AS ta, any(ib.title) AS tb
            FROM {storage.table('pair_counts')} AS c
            LEFT JOIN {storage.table('items')} AS ia ON ia.item_id = c.item_a
            LEFT JOIN {storage.table('items')} AS ib ON ib.item_id = c.item_b
            GROUP BY c.item_a, c.item_b ORDER BY n DESC LIMIT 10""")
    tiers = storage.query_rows(
        f"SELECT tier, count() FROM {storage.table('pair_tiers')} GROUP BY tier ORDER BY tier")
    print("\nmost frequent cross-category pairs:")
    for a, b, n, ta, tb in rows:
        print(f"  {n:6d}  {ta[:40]:40s} + {tb[:40]}")
    names = {1: "low", 2: "medium", 3: "high"}
    print("pairs routed to scoring by tier: " + ", ".join(f"{names[t]}={n}" for t, n in tiers))


def _print_labels(storage) -> None:
    from .storage.labels import effective_labels

    rows = effective_labels(storage)
    by_source: dict[str, int] = {}
    for row in rows:
        by_source[row["source"]] = by_source.get(row["source"], 0) + 1
    print("labels by source: " + (", ".join(f"{k}={v}" for k, v in sorted(by_source.items())) or "none"))
    scored = sorted((r for r in rows if r["dim_scores"]), key=lambda r: -r["score"])[:3]
    for row in scored:
        print(f"  {row['item_a']} + {row['item_b']}: {row['score']:.2f} "
              f"(backend={row['backend']}, tier {row['tier']})")
        for dim, value in row["dim_scores"].items():
            print(f"      {dim:10} {value:4.1f}  {row['dim_reasons'].get(dim, '')}")
