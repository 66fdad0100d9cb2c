"""Sessionisation and cross-category pair generation: the semantics of ``pair_counts``.

Per user, a history of distinct items with the time of their latest click, at most N items
(the N most recent). An event (u, i, t) pairs with every history item j with |t - t_j| <= W,
j != i, where both categories are known (at processing time) and differ. Each such pair
(min(i, j), max(i, j)) in string order counts +1 on the UTC day of t. Then i enters the
history at time max(t, its previous time); if the history then holds more than N items the
one with the oldest time (ties: smallest id) leaves.

This module is the hot path of the ingest: plain dicts, and a pair-day is one packed int
(item index a, item index b, day) rather than a tuple of strings, so aggregation hashes ints
and the conversion to Arrow is vectorised (numpy unpack + ``take`` from the id table).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa

DAY_S = 86400
ITEM_BITS = 24  # up to 16M distinct items per partition's intern table
DAY_BITS = 16  # UTC day number (days since 1970) fits until 2149
_ITEM_MASK = (1 << ITEM_BITS) - 1
_DAY_MASK = (1 << DAY_BITS) - 1

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
        self.ids: list[str] = []  # intern table: index -> item_id (only items that paired)
        self.index: dict[str, int] = {}

    def _intern(self, item: str) -> int:
        idx = self.index[item] = len(self.ids)
        self.ids.append(item)
        return idx

    def process(self, user: str, item: str, ts: float, counts: dict) -> None:
        """Apply one click; add its increments to ``counts[packed (a, b, day)]``."""
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
            index = self.index
            idx = index.get(item)
            if idx is None:
                idx = self._intern(item)
            day = int(ts // DAY_S)
            for other, other_ts in history.items():
                if other == item or abs(ts - other_ts) > window:
                    continue
                other_category = catalogue.get(other)
                if other_category is None or other_category == category:
                    continue
                other_idx = index.get(other)
                if other_idx is None:
                    other_idx = self._intern(other)
                if item < other:
                    key = (((idx << ITEM_BITS) | other_idx) << DAY_BITS) | day
                else:
                    key = (((other_idx << ITEM_BITS) | idx) << DAY_BITS) | day
                counts[key] = counts.get(key, 0) + 1
        previous = history.get(item)
        if previous is None or ts > previous:
            history[item] = ts
        if len(history) > self.history_size:
            oldest = min(history.items(), key=lambda kv: (kv[1], kv[0]))[0]
            del history[oldest]

    def counts_to_arrow(self, counts: Mapping[int, int]) -> pa.Table:
        """Aggregated increments as an Arrow table shaped like ``pair_counts``."""
        if not counts:
            return PAIR_COUNTS_SCHEMA.empty_table()
        keys = np.fromiter(counts.keys(), dtype=np.uint64, count=len(counts))
        values = np.fromiter(counts.values(), dtype=np.uint64, count=len(counts))
        day = (keys & _DAY_MASK).astype(np.int32)
        pair = keys >> DAY_BITS
        a = (pair >> ITEM_BITS).astype(np.int64)
        b = (pair & _ITEM_MASK).astype(np.int64)
        ids = pa.array(self.ids, pa.string())
        return pa.table(
            [ids.take(pa.array(a)), ids.take(pa.array(b)),
             pa.array(day, pa.int32()).cast(pa.date32()), pa.array(values)],
            schema=PAIR_COUNTS_SCHEMA,
        )

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

