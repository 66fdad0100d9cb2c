"""``pairstream bench evidence``: what lift's item marginals cost, read from ``item_day_clicks``
(kept by the inserts, migration 9) against a scan of ``pair_counts`` (how every statistic read
them before), in one run on one store.

Lift needs C_i (an item's co-clicks with anything in the horizon) for the items of the pairs it
scores, and T (all co-clicks). Read from ``pair_counts`` that is a scan of every pair row of the
horizon, twice (once per side of the pair), whatever few items are asked; from
``item_day_clicks`` it is one row per item and day. The bench writes ``--pair-rows`` random pair-day
rows over ``--items`` items and 30 days through ``Storage.insert_arrow`` (the views keep
``item_day_clicks`` as the ingest's inserts do), checks that both reads give the same numbers,
and times each (the median of 3) for the item sets the periodic jobs ask: every item (a
statistics refresh), 2,000 items (a continuous-publishing refresh's changed pairs) and 100
items (the labeller's ``pair_evidence``); then the whole ``pair_evidence`` of 100 pairs and
``changed_evidence`` of 2,000 changed pairs, which now use the kept marginals.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa

from streams.core.storage import stats
from streams.core.storage.chdb_client import ChdbStorage
from streams.core.storage.migrations import migrate

DAYS = 30
FIRST_DAY = 20_400
CHUNK = 500_000
RUNS = 3


def _scan_sql(t, in_horizon: str, items_filter: str) -> str:
    """Item marginals as read before migration 9: every pair row of the horizon, both sides."""
    return f"""SELECT item_id, sum(n) AS clicks FROM (
                 SELECT item_a AS item_id, count AS n FROM {t('pair_counts')} WHERE {in_horizon}
                 UNION ALL
                 SELECT item_b AS item_id, count AS n FROM {t('pair_counts')} WHERE {in_horizon})
               WHERE {items_filter} GROUP BY item_id"""


def _timed(call, *args) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(RUNS):
        started = time.perf_counter()
        result = call(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _fill(storage, rows: int, items: int, rng) -> int:
    written = 0
    while written < rows:
        n = min(CHUNK, rows - written)
        a, b = rng.integers(0, items, n), rng.integers(0, items, n)
        keep = a != b
        lo, hi = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
        storage.insert_arrow("pair_counts", pa.table({
            "item_a": pa.array([f"i{x:06d}" for x in lo]), "item_b": pa.array([f"i{x:06d}" for x in hi]),
            "day": pa.array(FIRST_DAY + rng.integers(0, DAYS, len(lo)), pa.int32()).cast(pa.date32()),
            "count": pa.array(rng.integers(1, 6, len(lo)), pa.uint64())}))
        written += n
        print(f"  {written:,} / {rows:,} pair-day rows written", end="\r", flush=True)
    print()
    # user visits (the horizon's days, the users of pair_evidence): 20 users a day
    visits = [(f"u{u}", f"i{int(x):06d}", FIRST_DAY + day) for day in range(DAYS) for u in range(20)
              for x in rng.integers(0, items, 10)]
    storage.insert_arrow("user_item_days", pa.table({
        "user_id": [u for u, _, _ in visits], "item_id": [i for _, i, _ in visits],
        "day": pa.array([d for _, _, d in visits], pa.int32()).cast(pa.date32()),
        "clicks": pa.array([1] * len(visits), pa.uint64())}))
    return written


def run(args) -> dict:
    rng = np.random.default_rng(7)
    rows, n_items = args.pair_rows, args.items
    with tempfile.TemporaryDirectory(prefix="pairstream-evidence-") as tmp:
        storage = ChdbStorage(tmp, "bench")
        try:
            migrate(storage)
            started = time.perf_counter()
            _fill(storage, rows, n_items, rng)
            fill_s = time.perf_counter() - started
            t = storage.table
            span = stats.horizon(storage, DAYS)
            assert span is not None
            params = {"lo": span[0].isoformat(), "hi": span[1].isoformat()}
            in_horizon = "day >= {lo:Date} AND day <= {hi:Date}"
            all_items = [f"i{x:06d}" for x in range(n_items)]
            sets = {"all_items": None, "items_2000": 2000, "items_100": 100}
            reads = {}
            for name, size in sets.items():
                chosen = all_items if size is None else sorted(rng.choice(all_items, size, replace=False))
                where = "1" if size is None else "item_id IN {items:Array(String)}"
                query = {**params, "items": list(chosen)}
                scan_s, scanned = _timed(storage.query_rows, _scan_sql(t, in_horizon, where), query)
                # the statistics' own read (every item: the refresh's form, with no filter)
                kept = stats.marginals_sql(t, in_horizon, "" if size is None else where)
                kept_sql = f"SELECT item_id, clicks FROM {kept}"
                kept_s, kept = _timed(storage.query_rows, kept_sql, query)
                reads[name] = {"scan_s": round(scan_s, 4), "kept_s": round(kept_s, 4),
                               "speedup": round(scan_s / max(kept_s, 1e-9), 1),
                               "equal": sorted(scanned) == sorted(kept)}
                print(f"marginals of {name}: scan of pair_counts {scan_s:.3f} s, item_day_clicks "
                      f"{kept_s:.4f} s ({reads[name]['speedup']}x), same numbers: {reads[name]['equal']}")
            p = stats.StatsParams(horizon_days=DAYS)
            pairs = storage.query_rows(
                f"SELECT item_a, item_b FROM {t('pair_counts')} GROUP BY item_a, item_b "
                "ORDER BY cityHash64(item_a, item_b) LIMIT 2000")
            evidence_s, _ = _timed(stats.pair_evidence, storage, pairs[:100], p)
            print(f"pair_evidence of 100 pairs: {evidence_s:.3f} s")
            storage.insert_arrow("pair_changes", pa.table({
                "refresh": pa.array([1] * len(pairs), pa.uint64()),
                "item_a": [a for a, _ in pairs], "item_b": [b for _, b in pairs]}))
            changed_s, _ = _timed(stats.changed_evidence, storage, p, 1)
            print(f"changed_evidence of {len(pairs):,} changed pairs: {changed_s:.3f} s")
            sizes = dict(storage.query_rows(
                "SELECT table, sum(bytes_on_disk) FROM system.parts WHERE database = {db:String} AND active "
                "AND table IN ('pair_counts', 'item_day_clicks') GROUP BY table", {"db": storage.database}))
        finally:
            storage.close()
    return {"pair_day_rows": rows, "items": n_items, "fill_s": round(fill_s, 1), "marginals": reads,
            "pair_evidence_100_s": round(evidence_s, 4), "changed_evidence_2000_s": round(changed_s, 4),
            "bytes_on_disk": {name: int(size) for name, size in sizes.items()}}
