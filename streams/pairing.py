"""Sessionisation and cross-category pair generation: the semantics of ``pair_counts``.

Per user, a history of distinct items with the time of their latest click, at most N items
(the N most recent). An event (u, i, t) pairs with every history item j with |t - t_j| <= W,
j != i, where both categories are known (at processing time) and differ. Each such pair
(min(i, j), max(i, j)) in string order counts +1 on the UTC day of t. Then i enters the
history at time max(t, its previous time); if the history then holds more than N items the
one with the oldest time (ties: smallest id) leaves.

This module is the hot path of the ingest: plain dicts, no per-event allocation beyond the
pair keys, and increments aggregated per batch before they reach ClickHouse.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa

DAY_S = 86400

PAIR_COUNTS_SCHEMA = pa.schema([
    ("item_a", pa.string()),
    ("item_b", pa.string()),
    ("day", pa.date32()),
    ("count", pa.uint64()),
])


class Sessionizer:
    """User histories of one partition, and the pair increments they produce."""

    def __init__(self, catalogue: Mapping[str, str], window_s: float, history_size: int):
        self.catalogue = catalogue  # item_id -> category, shared with the catalogue agent
        self.window_s = float(window_s)
        self.history_size = int(history_size)
        self.histories: dict[str, dict[str, float]] = {}
        self.watermark = 0.0  # newest event time seen
        self.unknown_items = 0

    def process(
        self, user: str, item: str, ts: float, counts: defaultdict
    ) -> None:
        """Apply one click; add its pair increments to ``counts[(a, b, day)]``."""
        histories = self.histories
        history = histories.get(user)
        if history is None:
            history = histories[user] = {}
        if ts > self.watermark:
            self.watermark = ts
        catalogue = self.catalogue
        category = catalogue.get(item)
        if category is None:
            self.unknown_items += 1
        elif history:
            window = self.window_s
            day = int(ts // DAY_S)
            for other, other_ts in history.items():
                if other == item or abs(ts - other_ts) > window:
                    continue
                other_category = catalogue.get(other)
                if other_category is None or other_category == category:
                    continue
                if item < other:
                    counts[(item, other, day)] += 1
                else:
                    counts[(other, item, day)] += 1
        previous = history.get(item)
        if previous is None or ts > previous:
            history[item] = ts
        if len(history) > self.history_size:
            oldest = min(history.items(), key=lambda kv: (kv[1], kv[0]))[0]
            del history[oldest]

    def evict_idle(self, idle_s: float) -> list[str]:
        """Drop users whose newest click is more than ``idle_s`` behind the watermark."""
        cutoff = self.watermark - idle_s
        idle = [u for u, h in self.histories.items() if not h or max(h.values()) < cutoff]
        for user in idle:
            del self.histories[user]
        return idle

    # --- checkpoint rows (see streams.ingest: state is saved with every batch) ----------
    def snapshot(self, users: Iterable[str]) -> tuple[list[str], list[list[str]], list[list[float]]]:
        ids, items, times = [], [], []
        for user in users:
            history = self.histories.get(user, {})
            ids.append(user)
            items.append(list(history.keys()))
            times.append(list(history.values()))
        return ids, items, times

    def restore(self, users: list[str], items: list[list[str]], times: list[list[float]]) -> None:
        for user, user_items, user_times in zip(users, items, times):
            if user_items:
                self.histories[user] = dict(zip(user_items, user_times))
                self.watermark = max(self.watermark, max(user_times))


def counts_to_arrow(counts: Mapping[tuple[str, str, int], int]) -> pa.Table:
    """Aggregated increments as an Arrow table shaped like ``pair_counts``."""
    if not counts:
        return PAIR_COUNTS_SCHEMA.empty_table()
    keys = list(counts.keys())
    a, b, day = zip(*keys)
    return pa.table(
        [
            pa.array(a, pa.string()),
            pa.array(b, pa.string()),
            pa.array(np.fromiter(day, dtype=np.int32, count=len(keys)), pa.int32()).cast(pa.date32()),
            pa.array(np.fromiter(counts.values(), dtype=np.uint64, count=len(keys))),
        ],
        schema=PAIR_COUNTS_SCHEMA,
    )
