"""What the tables hold, read back for comparison with the plain-Python reference."""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa

from streams.core.storage import stats
from streams.core.storage.base import timestamp_array


def table_visits(storage) -> dict:
    rows = storage.query_rows(
        f"SELECT user_id, item_id, toUInt32(day), sum(clicks) FROM {storage.table('user_item_days')} "
        "GROUP BY user_id, item_id, day")
    return {(u, i, d): n for u, i, d, n in rows}


def item_marginals(storage) -> tuple[dict, dict]:
    """(C_i per item and day as ``item_day_clicks`` keeps it, the same recomputed from every
    ``pair_counts`` row): equal whatever happened to the writes."""
    kept = storage.query_rows(
        f"SELECT item_id, toUInt32(day), sum(clicks) FROM {storage.table('item_day_clicks')} "
        "GROUP BY item_id, day HAVING sum(clicks) > 0")
    recomputed = storage.query_rows(
        f"""SELECT item_id, toUInt32(day), sum(n) FROM (
                SELECT item_a AS item_id, day, count AS n FROM {storage.table('pair_counts')}
                UNION ALL SELECT item_b, day, count FROM {storage.table('pair_counts')})
            GROUP BY item_id, day""")
    return {(i, d): n for i, d, n in kept}, {(i, d): n for i, d, n in recomputed}


def table_stats(storage) -> dict:
    table = stats.latest(storage)
    return {(r["item_a"], r["item_b"]): r for r in table.to_pylist()}


def assert_stats_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for pair, row in want.items():
        for key, value in row.items():
            assert math.isclose(got[pair][key], value, rel_tol=1e-5, abs_tol=1e-6), (pair, key, got[pair][key], value)


def insert_pair_stats(storage, pairs: list[tuple[str, str]], lifts: list[float], counts: list[int]) -> None:
    """One ``pair_stats`` version holding these pairs with these lifts and co-click counts."""
    n = len(pairs)
    storage.insert_arrow("pair_stats", pa.table({
        "stats_version": pa.array([1] * n, pa.uint64()),
        "item_a": [a for a, _ in pairs], "item_b": [b for _, b in pairs],
        "count": pa.array(counts, pa.uint64()), "decayed_count": pa.array([float(c) for c in counts]),
        "users": pa.array(counts, pa.uint32()), "users_a": pa.array([50] * n, pa.uint32()),
        "users_b": pa.array([50] * n, pa.uint32()), "lift": pa.array(lifts, pa.float32()),
        "pmi": pa.array(np.log(lifts), pa.float32()), "jaccard": pa.array([0.1] * n, pa.float32()),
        "swing": pa.array([0.0] * n), "computed_at": timestamp_array([time.time()] * n)}))
