"""Sessionisation and cross-category pair generation: the semantics of ``pair_counts``.

Per user, a history of distinct items with the time of their latest click, at most N items
(the N most recent). An event (u, i, t) pairs with every history item j with |t - t_j| <= W,
j != i, where both categories are known (at processing time) and differ. Each such pair
(min(i, j), max(i, j)) in string order counts +1 on the UTC day of t. Then i enters the
history at time max(t, its previous time); if the history then holds more than N items the
one with the oldest time (ties: smallest id) leaves.

The state is columnar so a whole batch runs in one compiled call (``streams.ingest.kernel``):
users are slots of (slots, N) item/time arrays, items are dense intern indexes with an int
category code, and the Python side only maps strings to indexes (one dict lookup per field).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, cast

import numpy as np
import pyarrow as pa

from streams.ingest import kernel
from streams.ingest.user_items import aggregate_user_item_days

_NO_WEIGHTS = np.empty(0, np.uint64)
COMPACT_MIN_IDS = 4096  # intern tables smaller than this are never worth rebuilding
EVICTION_QUORUM = 3  # users that must be ahead before idleness is judged (``eviction_watermark``)
EVICTION_SHARE = 0.2  # ... and at least this share of the live users: the clock's bound

PAIR_COUNTS_SCHEMA = pa.schema([
    ("item_a", pa.string()),
    ("item_b", pa.string()),
    ("day", pa.date32()),
    ("count", pa.uint64()),
])


@dataclass
class PairIncrements:
    """A batch's aggregated increments: packed pair-day keys (see ``pair_kernel``) and counts."""

    keys: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    @staticmethod
    def merge(parts: Sequence["PairIncrements"]) -> "PairIncrements":
        """One aggregate of several batches' increments (same partition, same intern table)."""
        if len(parts) == 1:
            return parts[0]
        return PairIncrements(*kernel.aggregate(
            np.concatenate([p.keys for p in parts]), np.concatenate([p.counts for p in parts])))


@dataclass
class Visits:
    """A batch's clicks per (user slot, item, day): packed keys (``kernel.visit_keys``) and
    counts, with the user id of each slot the keys name (``slots`` sorted, ``users`` alike)."""

    keys: np.ndarray
    counts: np.ndarray
    users: list
    slots: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @staticmethod
    def table(parts: Sequence["Visits"], ids: "IdTable") -> pa.Table | None:
        """The ``user_item_days`` rows of several batches of one partition (blocking: run it
        off the event loop). Each part names its own slots' users, so a slot reused between
        two parts still maps to the right user."""
        parts = [part for part in parts if len(part.keys)]
        if not parts:
            return None
        users, items, days, counts = [], [], [], []
        item_ids = ids.arrow()
        for part in parts:
            slot = (part.keys >> np.uint64(kernel.ITEM_BITS + kernel.DAY_BITS)).astype(np.int64)
            item = ((part.keys >> np.uint64(kernel.DAY_BITS)) & np.uint64(kernel.MAX_ITEMS - 1)).astype(np.int64)
            users.append(pa.array(part.users, pa.string()).take(pa.array(np.searchsorted(part.slots, slot))))
            items.append(item_ids.take(pa.array(item)).cast(pa.string()))
            days.append((part.keys & kernel.DAY_MASK).astype(np.int32))
            counts.append(part.counts)
        table = pa.table({
            "user_id": pa.chunked_array(users), "item_id": pa.chunked_array(items),
            "day": pa.array(np.concatenate(days)).cast(pa.date32()),
            "clicks": pa.array(np.concatenate(counts), pa.uint64()),
        })
        return aggregate_user_item_days(table)


class _Index(dict):
    """``value -> index``, creating the index on first lookup (so ``map(index.__getitem__,
    values)`` interns a whole column without a Python-level branch per value)."""

    def __init__(self, create):
        super().__init__()
        self._create = create

    def __missing__(self, key):
        idx = self[key] = self._create(key)
        return idx


class Sessionizer:
    """User histories of one partition, and the pair increments a batch of clicks produces.

    Categories are cached per intern index and refreshed from the catalogue's change log once
    per batch, so "category at processing time" holds at batch granularity."""

    def __init__(self, catalogue: Mapping[str, str], window_s: float, history_size: int):
        self.catalogue = catalogue  # item_id -> category, shared with the catalogue agent
        self.window_s = float(window_s)
        self.history_size = int(history_size)
        self.watermark = 0.0  # newest event time seen
        self.unknown_items = 0
        # items: intern table, ids as UTF-8 bytes + offsets (for the kernel's id order)
        self.ids: list[str] = []
        self.index = _Index(self._intern_item)
        self._new_ids: list[str] = []
        self._id_bytes = np.zeros(1 << 16, np.uint8)
        self._id_off = np.zeros(1 << 12, np.int64)
        self._cats = np.full(1 << 12, -1, np.int32)
        self._category_codes: dict[str, int] = {}
        self._catalogue_version = getattr(catalogue, "version", 0)
        # users: slots of fixed-width history rows
        self.slot_users: list[str | None] = []
        self.users = _Index(self._new_slot)
        self._free: list[int] = []
        self._h_item = np.zeros((64, self.history_size), np.int32)
        self._h_time = np.zeros((64, self.history_size), np.float64)
        self._h_len = np.zeros(64, np.int32)
        self._dirty = np.zeros(64, np.bool_)
        self._out = np.empty(0, np.uint64)
        self._items_after_compact = 0  # intern table size the last ``compact`` left

    # --- interning -----------------------------------------------------------------------
    def _intern_item(self, item: str) -> int:
        idx = len(self.ids)
        if idx >= kernel.MAX_ITEMS:
            raise RuntimeError(f"more than {kernel.MAX_ITEMS} distinct items in one partition's "
                               "intern table; restart the worker to rebuild it from the histories")
        self.ids.append(item)
        self._new_ids.append(item)
        return idx

    def _commit_new_items(self) -> None:
        """Append the ids interned since the last call to the byte buffer and category cache."""
        new = self._new_ids
        if not new:
            return
        self._new_ids = []
        first, count = len(self.ids) - len(new), len(new)
        encoded = [item.encode() for item in new]
        blob = np.frombuffer(b"".join(encoded), np.uint8)
        ends = np.cumsum([len(e) for e in encoded], dtype=np.int64) + self._id_off[first]
        need = first + count + 1
        if need > len(self._id_off):
            size = max(need, 2 * len(self._id_off))
            self._id_off = _grown(self._id_off, size, 0)
            self._cats = _grown(self._cats, size, -1)
        start = int(self._id_off[first])
        if start + len(blob) > len(self._id_bytes):
            self._id_bytes = _grown(self._id_bytes, max(start + len(blob), 2 * len(self._id_bytes)), 0)
        self._id_bytes[start:start + len(blob)] = blob
        self._id_off[first + 1:first + count + 1] = ends
        get = self.catalogue.get
        self._cats[first:first + count] = [self._category_code(get(item)) for item in new]

    def _category_code(self, category: str | None) -> int:
        if category is None:
            return -1
        code = self._category_codes.get(category)
        if code is None:
            code = self._category_codes[category] = len(self._category_codes)
        return code

    def _new_slot(self, user: str) -> int:
        if self._free:
            slot = self._free.pop()
            self.slot_users[slot] = user
            return slot
        slot = len(self.slot_users)
        self.slot_users.append(user)
        if slot >= len(self._h_len):
            size = 2 * len(self._h_len)
            self._h_item = _grown(self._h_item, size, 0)
            self._h_time = _grown(self._h_time, size, 0.0)
            self._h_len = _grown(self._h_len, size, 0)
            self._dirty = _grown(self._dirty, size, False)
        return slot

    def sync_catalogue(self) -> None:
        """Pick up catalogue changes (call between batches; cheap when nothing changed)."""
        version = getattr(self.catalogue, "version", 0)
        if version == self._catalogue_version:
            return
        changed = self.catalogue.changed_since(self._catalogue_version)  # type: ignore[attr-defined]
        if changed is None:  # too far behind the change log: refresh everything
            changed = self.ids
        get, index = self.catalogue.get, self.index
        for item in changed:
            idx = dict.get(index, item)  # dict.get: a lookup must not intern (``__missing__``)
            if idx is not None:
                self._cats[idx] = self._category_code(get(item))
        self._catalogue_version = version

    # --- the batch -----------------------------------------------------------------------
    def process_batch(self, users: Sequence[str], items: Sequence[str], times) -> PairIncrements:
        """Apply clicks in order; return their aggregated pair-day increments."""
        return self.process(users, items, times)[0]

    def process(self, users: Sequence[str], items: Sequence[str], times) -> tuple[PairIncrements, "Visits | None"]:
        """Apply clicks in order; return their pair-day increments and their (user, item,
        day) visits in interned form (None past ``kernel.MAX_VISIT_SLOTS`` user slots: then
        the caller aggregates the strings)."""
        n = len(users)
        times = np.asarray(times, np.float64)
        if n == 0:
            empty = np.empty(0, np.uint64)
            return PairIncrements(empty, empty), Visits(empty, empty, [])
        slots = np.fromiter(map(self.users.__getitem__, users), np.int64, n)
        idx = np.fromiter(map(self.index.__getitem__, items), np.int64, n)
        self._commit_new_items()
        need = n * self.history_size
        if len(self._out) < need:
            self._out = np.empty(max(need, 2 * len(self._out)), np.uint64)
        m, unknown = kernel.pair_batch(
            slots, idx, times, self._h_item, self._h_time, self._h_len, self._cats,
            self._id_bytes, self._id_off, self.window_s, self._out)
        self.unknown_items += int(unknown)
        self._dirty[slots] = True
        self.watermark = max(self.watermark, float(times.max()))
        increments = PairIncrements(*kernel.aggregate(self._out[:m], _NO_WEIGHTS))
        if len(self.slot_users) > kernel.MAX_VISIT_SLOTS:
            return increments, None
        # the users by slot now: a slot is reused once its user is evicted, so the strings
        # are taken here, for the distinct users of this batch only
        keys, counts = kernel.aggregate(kernel.visit_keys(slots, idx, times), _NO_WEIGHTS)
        distinct = np.unique(slots)
        users_now = [self.slot_users[s] for s in distinct.tolist()]
        return increments, Visits(keys, counts, users_now, distinct)

    def id_table(self) -> "IdTable":
        """The intern table as it stands: what turns this sessionizer's increments into
        strings or hashes, safe to use on another thread while batches go on (see ``IdTable``)."""
        n = len(self.ids)
        return IdTable(self._id_bytes, self._id_off, n)

    def decode(self, increments: PairIncrements) -> dict[tuple[str, str, int], int]:
        """``{(item_a, item_b, day): count}`` (tests and debugging)."""
        a, b, day = kernel.unpack_ordered(increments.keys, self._id_bytes, self._id_off)
        return {(self.ids[x], self.ids[y], int(d)): int(c)
                for x, y, d, c in zip(a, b, day, increments.counts)}

    # --- state: eviction and checkpoint rows (see streams.ingest.consumer) --------------------------
    @property
    def num_users(self) -> int:
        return len(self.slot_users) - len(self._free)

    def has_dirty(self) -> bool:
        return bool(self._dirty.any())

    def eviction_watermark(self, newest: np.ndarray) -> float:
        """The partition's clock: the time that ``k`` live users' newest clicks have reached,
        k = max(EVICTION_QUORUM, EVICTION_SHARE of live users), not the newest event alone.

        Why: event time comes from any producer, and a click up to ``max_future_s`` ahead is
        valid. With the newest event as the clock, one fast client would move it a day forward
        and make every other live session look idle; with k = 1% of users, three of ~70 did.
        The bound: fewer than EVICTION_SHARE (a fifth) of a partition's live users with clocks
        ahead cannot move it, whatever the partition's size. The price: idleness is judged
        against the 80th percentile of live users' newest clicks, so an idle user is evicted
        a little later (eviction only frees memory: an idle user pairs with nothing in the
        window anyway, so a later clock loses nothing). With fewer live users than the quorum
        there is no clock (-inf): nobody is evicted (their state is tiny).
        """
        live = newest[newest > -np.inf]
        k = max(EVICTION_QUORUM, math.ceil(EVICTION_SHARE * len(live)))
        if len(live) < k:
            return -np.inf
        return float(np.partition(live, len(live) - k)[len(live) - k])

    def clock(self) -> float:
        """``eviction_watermark`` over the live users now: the event time this partition has
        reached, robust to a minority of wrong or forged clocks (-inf below the quorum)."""
        return self._clock_and_newest()[0]

    def _clock_and_newest(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(clock, which slots hold a user, each slot's newest click time)."""
        used = len(self.slot_users)
        active = self._h_len[:used] > 0
        newest = kernel.newest_times(self._h_time[:used], self._h_len[:used])
        return self.eviction_watermark(np.where(active, newest, -np.inf)), active, newest

    def evict_idle(self, idle_s: float) -> list[str]:
        """Drop users whose newest click is more than ``idle_s`` behind ``eviction_watermark``."""
        watermark, active, newest = self._clock_and_newest()
        idle = np.flatnonzero(active & (newest < watermark - idle_s))
        evicted: list[str] = []
        for slot in idle.tolist():
            user = cast(str, self.slot_users[slot])  # an active slot has its user
            evicted.append(user)
            del self.users[user]
            self.slot_users[slot] = None
            self._free.append(slot)
        self._h_len[idle] = 0
        self._dirty[idle] = False
        return evicted

    def compact(self, force: bool = False) -> bool:
        """Rebuild the intern table and the user slots around the live histories once the
        table has doubled since the last rebuild (or most slots are free); True when it did.

        Why: evicting a user frees its history row, but the ids it brought (its own, and items
        nobody live still holds) would otherwise stay interned for the life of the worker, so
        memory would grow with every distinct id ever seen. Amortised: a rebuild costs
        O(live state) and happens when the table has doubled, so the table stays within
        2x the live items + ``COMPACT_MIN_IDS``.

        Precondition: no ``PairIncrements`` of this sessionizer is outstanding, since their
        keys are intern indexes. The ingest calls it from its checkpoint, after every open
        batch became an Arrow table of strings."""
        used = len(self.slot_users)
        grown = len(self.ids) >= 2 * self._items_after_compact + COMPACT_MIN_IDS
        slots_free = len(self._free) >= max(COMPACT_MIN_IDS, used // 2)
        if not (force or grown or slots_free):
            return False
        live = np.flatnonzero(np.fromiter((user is not None for user in self.slot_users), np.bool_, used))
        lengths = self._h_len[live]
        held = np.arange(self.history_size) < lengths[:, None]
        rows = self._h_item[live]
        kept_items = np.unique(rows[held])
        remap = np.zeros(max(len(self.ids), 1), np.int32)
        remap[kept_items] = np.arange(len(kept_items), dtype=np.int32)
        size = max(64, 1 << int(len(live) - 1).bit_length()) if len(live) else 64
        h_item = np.zeros((size, self.history_size), np.int32)
        h_item[:len(live)] = np.where(held, remap[rows], 0)
        h_time = np.zeros((size, self.history_size), np.float64)
        h_time[:len(live)] = self._h_time[live]
        h_len, dirty = np.zeros(size, np.int32), np.zeros(size, np.bool_)
        h_len[:len(live)], dirty[:len(live)] = lengths, self._dirty[live]
        self._h_item, self._h_time, self._h_len, self._dirty = h_item, h_time, h_len, dirty
        self.slot_users = [self.slot_users[s] for s in live.tolist()]
        self.users = _Index(self._new_slot)  # a new dict: a dict never shrinks on deletes
        self.users.update(zip(self.slot_users, range(len(live))))
        self._free = []
        kept_ids = [self.ids[i] for i in kept_items.tolist()]  # index k = ``remap``'s k
        self.ids, self._new_ids = kept_ids, list(kept_ids)
        self.index = _Index(self._intern_item)
        self.index.update(zip(kept_ids, range(len(kept_ids))))
        self._id_bytes = np.zeros(1 << 16, np.uint8)
        self._id_off = np.zeros(1 << 12, np.int64)
        self._cats = np.full(1 << 12, -1, np.int32)
        self._commit_new_items()
        self._catalogue_version = getattr(self.catalogue, "version", 0)
        self._items_after_compact = len(self.ids)
        return True

    def _rows(self, slots: Iterable[int]) -> tuple[list[str], list[list[str]], list[list[float]]]:
        ids: list[str] = []
        items: list[list[str]] = []
        times: list[list[float]] = []
        for slot in slots:
            length = int(self._h_len[slot])
            ids.append(cast(str, self.slot_users[slot]))
            items.append([self.ids[i] for i in self._h_item[slot, :length].tolist()])
            times.append(self._h_time[slot, :length].tolist())
        return ids, items, times

    def snapshot(self) -> tuple[list[str], list[list[str]], list[list[float]]]:
        """Every user's history (tests; checkpoints use ``checkpoint_columns``)."""
        return self._rows(s for s, user in enumerate(self.slot_users) if user is not None)

    def checkpoint_rows(self, idle_s: float):
        """Rows to save: users touched since the last call, and idle users evicted now (with
        empty histories, so a restore does not bring them back). Returns (users, items, times,
        evicted count) as Python lists (tests; the ingest uses ``checkpoint_columns``)."""
        users, items, times, evicted = self.checkpoint_columns(idle_s)
        return users, items.to_pylist(), times.to_pylist(), evicted

    def checkpoint_columns(self, idle_s: float) -> tuple[list[str], pa.Array, pa.Array, int]:
        """``checkpoint_rows`` as Arrow columns (users, items lists, times lists, evicted):
        the histories are cut out of the slot arrays with numpy and their ids taken from the
        intern table by Arrow, so a checkpoint of many users costs no Python per item (it
        runs on the event loop). Evicted users come last, with empty histories."""
        evicted = self.evict_idle(idle_s)
        dirty = np.flatnonzero(self._dirty[:len(self.slot_users)])
        self._dirty[dirty] = False
        dirty_lengths = self._h_len[dirty]
        lengths = np.concatenate([dirty_lengths, np.zeros(len(evicted), np.int32)])
        held = np.arange(self.history_size) < dirty_lengths[:, None]
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        item_ids = self.id_table().arrow().take(pa.array(self._h_item[dirty][held])).cast(pa.string())
        items = pa.ListArray.from_arrays(offsets, item_ids)
        times = pa.ListArray.from_arrays(offsets, pa.array(self._h_time[dirty][held]))
        users = cast(list[str], [self.slot_users[slot] for slot in dirty.tolist()]) + evicted
        return users, items, times, len(evicted)

    def restore(self, users: list[str], items: list[list[str]], times: list[list[float]]) -> None:
        keep = self.history_size
        for user, user_items, user_times in zip(users, items, times):
            if not user_items:
                continue
            entries = list(zip(user_times, user_items))
            if len(entries) > keep:  # saved under a larger N: keep the newest (time, id)
                entries = sorted(entries, reverse=True)[:keep]
            slot = self.users[user]
            for s, (ts, item) in enumerate(entries):
                self._h_item[slot, s] = self.index[item]
                self._h_time[slot, s] = ts
            self._h_len[slot] = len(entries)
            self.watermark = max(self.watermark, max(user_times))
        self._commit_new_items()


@dataclass(frozen=True)
class IdTable:
    """A view of a sessionizer's intern table (ids as UTF-8 bytes + offsets, ``size`` ids).

    Why a view is enough to hand to a writer thread: the sessionizer never writes below the
    end of its tables (new ids are appended past ``size``; a full buffer is copied into a
    new, larger one) and ``compact`` builds new arrays instead of rewriting these. So a view
    taken now keeps decoding every key interned before it, however long the write takes,
    and the event loop only pays for taking it."""

    id_bytes: np.ndarray
    id_off: np.ndarray
    size: int

    def arrow(self) -> pa.LargeStringArray:
        """The ids as an Arrow array over the same buffers (no copy)."""
        return pa.LargeStringArray.from_buffers(
            self.size, pa.py_buffer(self.id_off[:self.size + 1]),
            pa.py_buffer(self.id_bytes[:self.id_off[self.size]]))

    def to_arrow(self, increments: PairIncrements) -> pa.Table:
        """Aggregated increments as an Arrow table shaped like ``pair_counts``."""
        if not len(increments):
            return PAIR_COUNTS_SCHEMA.empty_table()
        a, b, day = kernel.unpack_ordered(increments.keys, self.id_bytes, self.id_off)
        ids = self.arrow()
        return pa.table(
            [ids.take(pa.array(a)).cast(pa.string()), ids.take(pa.array(b)).cast(pa.string()),
             pa.array(day, pa.int32()).cast(pa.date32()), pa.array(increments.counts)],
            schema=PAIR_COUNTS_SCHEMA,
        )

    def touched_hashes(self, keys: Sequence[np.ndarray], day_cap: int | None = None) -> tuple[np.ndarray, int]:
        """``pair_hash`` of each distinct pair in packed increment keys, and their newest day
        number, at most ``day_cap`` (what the tier-crossing check needs; no strings are built).
        The cap keeps one click stamped decades ahead from ending the horizon there, which
        would hide every other pair's crossing in the check."""
        packed = np.concatenate(keys)
        newest_day = int((packed & kernel.DAY_MASK).max())
        if day_cap is not None:
            newest_day = min(newest_day, day_cap)
        # distinct pairs by the compiled hash aggregate (a pair key is never the empty
        # marker: lo < hi), not np.unique's sort
        pairs, _ = kernel.aggregate(packed >> np.uint64(kernel.DAY_BITS), _NO_WEIGHTS)
        pairs = pairs << np.uint64(kernel.DAY_BITS)
        return kernel.pair_hashes(pairs, self.id_bytes, self.id_off), newest_day


def _grown(array: np.ndarray, size: int, fill) -> np.ndarray:
    """``array`` copied into a larger first axis of ``size``, the new part set to ``fill``."""
    out = np.full((size,) + array.shape[1:], fill, array.dtype)
    out[:len(array)] = array
    return out
