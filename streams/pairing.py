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
    """User histories of one partition, and the pair increments they produce.

    A history maps item -> (time, intern index). Two things keep the per-event loop short:
    categories are read from a list by intern index (synced from the catalogue's change log
    once per batch, so "category at processing time" still holds at batch granularity), and
    while a user's clicks arrive in time order the dict's insertion order *is* time order, so
    the history's oldest item is its first key and trimming needs no scan.
    """

    def __init__(self, catalogue: Mapping[str, str], window_s: float, history_size: int):
        self.catalogue = catalogue  # item_id -> category, shared with the catalogue agent
        self.window_s = float(window_s)
        self.history_size = int(history_size)
        self.histories: dict[str, dict[str, tuple[float, int]]] = {}
        self.unordered: set[str] = set()  # users whose history order is not time order
        self.watermark = 0.0  # newest event time seen
        self.unknown_items = 0
        self.ids: list[str] = []  # intern table: index -> item_id
        self.categories: list[str | None] = []  # index -> category (None: unknown)
        self.index: dict[str, int] = {}
        self._catalogue_version = getattr(catalogue, "version", 0)

    def _intern(self, item: str) -> int:
        idx = self.index[item] = len(self.ids)
        self.ids.append(item)
        self.categories.append(self.catalogue.get(item))
        return idx

    def sync_catalogue(self) -> None:
        """Pick up catalogue changes (call between batches; cheap when nothing changed)."""
        version = getattr(self.catalogue, "version", 0)
        if version == self._catalogue_version:
            return
        changed = self.catalogue.changed_since(self._catalogue_version)  # type: ignore[attr-defined]
        if changed is None:  # too far behind the change log: refresh everything
            changed = self.ids
        get, index, categories = self.catalogue.get, self.index, self.categories
        for item in changed:
            idx = index.get(item)
            if idx is not None:
                categories[idx] = get(item)
        self._catalogue_version = version

    def process(self, user: str, item: str, ts: float, counts: dict) -> None:
        """Apply one click; add its increments to ``counts[packed (a, b, day)]``."""
        history = self.histories.get(user)
        if history is None:
            history = self.histories[user] = {}
        if ts > self.watermark:
            self.watermark = ts
        idx = self.index.get(item)
        if idx is None:
            idx = self._intern(item)
        categories = self.categories
        category = categories[idx]
        if category is None:
            self.unknown_items += 1
        elif history:
            window = self.window_s
            day = int(ts // DAY_S)
            for other, (other_ts, other_idx) in history.items():
                if other_idx == idx:
                    continue
                gap = ts - other_ts
                if gap > window or gap < -window:
                    continue
                other_category = categories[other_idx]
                if other_category is None or other_category == category:
                    continue
                if item < other:
                    key = (((idx << ITEM_BITS) | other_idx) << DAY_BITS) | day
                else:
                    key = (((other_idx << ITEM_BITS) | idx) << DAY_BITS) | day
                counts[key] = counts.get(key, 0) + 1
        previous = history.get(item)
        if previous is None or ts > previous[0]:
            if history and user not in self.unordered:
                if ts < next(reversed(history.values()))[0]:
                    self.unordered.add(user)
                elif previous is not None:
                    del history[item]  # move to the end: order stays time order
            history[item] = (ts, idx)
        if len(history) > self.history_size:
            self._drop_oldest(user, history)

    def _drop_oldest(self, user: str, history: dict) -> None:
        """The item with the oldest time leaves; ties: the smallest id."""
        if user not in self.unordered:
            keys = iter(history.items())
            first, (first_ts, _) = next(keys)
            if next(keys)[1][0] != first_ts:
                del history[first]
                return
        oldest_ts = min(history.values())[0]
        del history[min(k for k, v in history.items() if v[0] == oldest_ts)]

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
        idle = [u for u, h in self.histories.items()
                if not h or max(v[0] for v in h.values()) < cutoff]
        for user in idle:
            del self.histories[user]
            self.unordered.discard(user)
        return idle

    # --- checkpoint rows (see streams.ingest: histories are saved at checkpoints) --------
    def snapshot(self, users: Iterable[str]) -> tuple[list[str], list[list[str]], list[list[float]]]:
        ids, items, times = [], [], []
        for user in users:
            history = self.histories.get(user, {})
            ids.append(user)
            items.append(list(history.keys()))
            times.append([v[0] for v in history.values()])
        return ids, items, times

    def restore(self, users: list[str], items: list[list[str]], times: list[list[float]]) -> None:
        for user, user_items, user_times in zip(users, items, times):
            if not user_items:
                continue
            history = {}
            for item, ts in zip(user_items, user_times):
                idx = self.index.get(item)
                history[item] = (ts, self._intern(item) if idx is None else idx)
            self.histories[user] = history
            if any(b < a for a, b in zip(user_times, user_times[1:])):
                self.unordered.add(user)
            self.watermark = max(self.watermark, max(user_times))
