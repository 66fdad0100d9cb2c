"""What the tables hold, read back for comparison with the plain-Python reference."""

from __future__ import annotations

import math

from streams.core.storage import stats


def table_visits(storage) -> dict:
    rows = storage.query_rows(
        f"SELECT user_id, item_id, toUInt32(day), sum(clicks) FROM {storage.table('user_item_days')} "
        "GROUP BY user_id, item_id, day")
    return {(u, i, d): n for u, i, d, n in rows}


def table_stats(storage) -> dict:
    table = stats.latest(storage)
    return {(r["item_a"], r["item_b"]): r for r in table.to_pylist()}


def assert_stats_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for pair, row in want.items():
        for key, value in row.items():
            assert math.isclose(got[pair][key], value, rel_tol=1e-5, abs_tol=1e-6), (pair, key, got[pair][key], value)
