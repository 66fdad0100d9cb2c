"""``pairstream bench stats``: one statistics refresh (``stats.refresh``: counts, users, lift,
Jaccard, Swing of every candidate pair) on a generated user-item graph: seconds and memory.

The graph: ``--users`` users with ``--per-user`` item visits each over 30 days, items drawn
with Zipf-like popularity (``1 / rank ** 0.9``) from ``--items``; a pair's co-clicks are the
consecutive visits of one user. The refresh runs in a fresh child process on the store the
parent wrote, so ``peak_rss_mb`` is the refresh's own (chDB runs inside that process), over
``rss_before_mb`` of the opened store. Run it from two checkouts for a before/after.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

from streams.core.storage.chdb_client import ChdbStorage
from streams.core.storage.migrations import migrate

FIRST_DAY = 20_400
DAYS = 30

CHILD = """
import json, resource, sys, time
from streams.core.storage import stats
from streams.core.storage.chdb_client import ChdbStorage
store = ChdbStorage(sys.argv[1], "bench")
params = {"memory_mb": int(sys.argv[2])} if "memory_mb" in stats.StatsParams.__dataclass_fields__ else {}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
version = stats.refresh(store, stats.StatsParams(**params))
seconds = time.perf_counter() - started
rows = store.query_value("SELECT count() FROM bench.pair_stats WHERE stats_version = {v:UInt64}", {"v": version})
swing = store.query_value("SELECT sum(swing) FROM bench.pair_stats WHERE stats_version = {v:UInt64}", {"v": version})
store.close()
print(json.dumps({"refresh_s": round(seconds, 2), "rss_before_mb": round(before),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "pairs": rows, "swing_sum": swing}))
"""


def _graph(storage, users: int, per_user: int, items: int) -> dict:
    rng = np.random.default_rng(1)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    popularity /= popularity.sum()
    n = users * per_user
    user = np.repeat(np.arange(users), per_user)
    item = rng.choice(items, n, p=popularity)
    day = FIRST_DAY + rng.integers(0, DAYS, n)
    storage.insert_arrow("user_item_days", pa.table({
        "user_id": pa.array([f"u{x}" for x in user]), "item_id": pa.array([f"i{x:06d}" for x in item]),
        "day": pa.array(day, pa.int32()).cast(pa.date32()), "clicks": pa.array(np.ones(n, np.uint64))}))
    a, b = item[:-1], item[1:]
    keep = (user[:-1] == user[1:]) & (a != b)
    lo, hi = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    storage.insert_arrow("pair_counts", pa.table({
        "item_a": pa.array([f"i{x:06d}" for x in lo]), "item_b": pa.array([f"i{x:06d}" for x in hi]),
        "day": pa.array(day[:-1][keep], pa.int32()).cast(pa.date32()),
        "count": pa.array(np.ones(int(keep.sum()), np.uint64))}))
    return {"user_item_rows": n, "pair_day_rows": int(keep.sum())}


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="pairstream-stats-") as tmp:
        storage = ChdbStorage(tmp, "bench")
        migrate(storage)
        started = time.perf_counter()
        shape = _graph(storage, args.users, args.per_user, args.items)
        print(f"graph: {shape['user_item_rows']:,} user-item rows, {shape['pair_day_rows']:,} pair-day rows "
              f"({time.perf_counter() - started:.0f} s)")
        storage.close()  # the child opens the directory (chDB: one process at a time)
        done = subprocess.run([sys.executable, "-c", CHILD, tmp, str(args.stats_memory_mb)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"refresh: {result['refresh_s']} s, peak RSS {result['peak_rss_mb']:,} MB "
          f"(opened store {result['rss_before_mb']:,} MB), {result['pairs']:,} pairs")
    return {"users": args.users, "per_user": args.per_user, "items": args.items, **shape, **result}
