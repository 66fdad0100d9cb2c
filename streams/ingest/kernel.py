"""The compiled inner loops of pairing: one batch of clicks -> aggregated pair-day increments.

Why compiled: the semantics are sequential per user (each click sees the history the previous
clicks left), so they do not vectorise; in CPython the loop cost ~6 µs per click (16 history
items on average), which capped the ingest at a fraction of the raw consume rate. Under numba
the same loop over integer arrays costs tens of nanoseconds per history item. The functions
here know nothing of Kafka or strings: users and items are dense indexes, categories are ints
(-1 = unknown), and item ids are kept as one UTF-8 byte buffer + offsets (Arrow's layout) so
ties can be broken by id exactly as Python's ``str`` order does (UTF-8 byte order is code
point order).

A pair-day key is packed into one uint64: ``lo << (ITEM_BITS + DAY_BITS) | hi << DAY_BITS | day`` with ``lo < hi``
intern indexes (24 bits each) and the UTC day number (16 bits, until 2149).
"""

from __future__ import annotations

import numpy as np
from numba import njit

ITEM_BITS = 24
DAY_BITS = 16
MAX_ITEMS = 1 << ITEM_BITS
DAY_S = 86400.0
_LO_SHIFT = np.uint64(ITEM_BITS + DAY_BITS)  # the key's layout, from the two widths above
_HI_SHIFT = np.uint64(DAY_BITS)
_ITEM_MASK = np.uint64(MAX_ITEMS - 1)
DAY_MASK = np.uint64((1 << DAY_BITS) - 1)
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)  # never a key: lo < hi keeps the top bits from all being set


@njit(cache=True, nogil=True)
def _id_less(a, b, id_bytes, id_off):
    """True if item id ``a`` sorts before item id ``b`` (bytewise, i.e. Python str order)."""
    sa, ea = id_off[a], id_off[a + 1]
    sb, eb = id_off[b], id_off[b + 1]
    la, lb = ea - sa, eb - sb
    n = la if la < lb else lb
    for k in range(n):
        x, y = id_bytes[sa + k], id_bytes[sb + k]
        if x != y:
            return x < y
    return la < lb


@njit(cache=True, nogil=True)
def pair_batch(users, items, times, h_item, h_time, h_len, cats, id_bytes, id_off, window, out):
    """Apply clicks in order to the histories; write packed increments to ``out``.

    ``h_item``/``h_time`` are (slots, N) arrays, ``h_len`` the used length of each row.
    Returns (increments written, clicks on items of unknown category). ``out`` must hold
    ``len(users) * N`` keys (an event pairs with at most N history items)."""
    n_hist = h_item.shape[1]
    m = 0
    unknown = 0
    for k in range(users.shape[0]):
        u = users[k]
        i = items[k]
        t = times[k]
        length = h_len[u]
        category = cats[i]
        if category < 0:
            unknown += 1
        elif length > 0:
            day = np.uint64(int(np.floor(t / DAY_S)))
            for s in range(length):
                j = h_item[u, s]
                if j == i:
                    continue
                gap = t - h_time[u, s]
                if gap > window or gap < -window:
                    continue
                other = cats[j]
                if other < 0 or other == category:
                    continue
                lo, hi = (i, j) if i < j else (j, i)
                out[m] = (np.uint64(lo) << _LO_SHIFT) | (np.uint64(hi) << _HI_SHIFT) | day
                m += 1
        # i enters the history at max(t, its previous time); over N entries the oldest
        # (time, then id) leaves, which may be the new click itself if it is out of order
        found = -1
        for s in range(length):
            if h_item[u, s] == i:
                found = s
                break
        if found >= 0:
            if t > h_time[u, found]:
                h_time[u, found] = t
        elif length < n_hist:
            h_item[u, length] = i
            h_time[u, length] = t
            h_len[u] = length + 1
        else:
            oldest = 0
            for s in range(1, length):
                ts, to = h_time[u, s], h_time[u, oldest]
                if ts < to or (ts == to and _id_less(h_item[u, s], h_item[u, oldest], id_bytes, id_off)):
                    oldest = s
            to = h_time[u, oldest]
            if t > to or (t == to and _id_less(h_item[u, oldest], i, id_bytes, id_off)):
                h_item[u, oldest] = i
                h_time[u, oldest] = t
    return m, unknown


@njit(cache=True, nogil=True)
def aggregate(keys, weights):
    """Distinct keys and the sum of their weights (open addressing; order is not meaningful).
    An empty ``weights`` counts each key once."""
    weighted = weights.shape[0] > 0
    n = keys.shape[0]
    bits = 4
    while (1 << bits) < 2 * n:
        bits += 1
    size = 1 << bits
    mask = np.uint64(size - 1)
    shift = np.uint64(64 - bits)
    table = np.full(size, _EMPTY, dtype=np.uint64)
    counts = np.zeros(size, dtype=np.uint64)
    distinct = 0
    for k in range(n):
        key = keys[k]
        w = weights[k] if weighted else np.uint64(1)
        h = (key * np.uint64(0x9E3779B97F4A7C15)) >> shift
        while True:
            slot = table[h]
            if slot == key:
                counts[h] += w
                break
            if slot == _EMPTY:
                table[h] = key
                counts[h] = w
                distinct += 1
                break
            h = (h + np.uint64(1)) & mask
    out_keys = np.empty(distinct, dtype=np.uint64)
    out_counts = np.empty(distinct, dtype=np.uint64)
    w = 0
    for h in range(size):
        if table[h] != _EMPTY:
            out_keys[w] = table[h]
            out_counts[w] = counts[h]
            w += 1
    return out_keys, out_counts


SLOT_BITS = 64 - ITEM_BITS - DAY_BITS  # user slots in a packed visit key
MAX_VISIT_SLOTS = (1 << SLOT_BITS) - 1  # the all-ones key (``_EMPTY``) stays impossible


@njit(cache=True, nogil=True)
def visit_keys(slots, items, times):
    """One packed key per click: ``slot << (ITEM_BITS + DAY_BITS) | item << DAY_BITS | day``
    (user slot, item intern index, UTC day), for ``user_item_days`` by ``aggregate``."""
    n = slots.shape[0]
    out = np.empty(n, dtype=np.uint64)
    for k in range(n):
        day = np.uint64(int(np.floor(times[k] / DAY_S)))
        out[k] = (np.uint64(slots[k]) << _LO_SHIFT) | (np.uint64(items[k]) << _HI_SHIFT) | day
    return out


@njit(cache=True, nogil=True)
def unpack_ordered(keys, id_bytes, id_off):
    """(item_a, item_b, day) index arrays with item_a < item_b in id (string) order."""
    n = keys.shape[0]
    a = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    day = np.empty(n, dtype=np.int32)
    for k in range(n):
        key = keys[k]
        lo = np.int64((key >> _LO_SHIFT) & _ITEM_MASK)
        hi = np.int64((key >> _HI_SHIFT) & _ITEM_MASK)
        day[k] = np.int32(key & DAY_MASK)
        if _id_less(hi, lo, id_bytes, id_off):
            a[k], b[k] = hi, lo
        else:
            a[k], b[k] = lo, hi
    return a, b, day


@njit(cache=True, nogil=True)
def newest_times(h_time, h_len):
    """Each slot's newest click time (-inf for an empty slot)."""
    out = np.full(h_len.shape[0], -np.inf)
    for u in range(h_len.shape[0]):
        for s in range(h_len[u]):
            if h_time[u, s] > out[u]:
                out[u] = h_time[u, s]
    return out


_M64 = np.uint64(0xC6A4A7935BD1E995)
_R64 = np.uint64(47)


@njit(cache=True, nogil=True)
def _murmur64a(buf, n):
    """MurmurHash64A with seed 0 over ``buf[:n]``: ClickHouse's ``murmurHash2_64`` of a String."""
    h = np.uint64(n) * _M64
    blocks = n // 8
    for k in range(blocks):
        w = np.uint64(0)
        for j in range(8):
            w |= np.uint64(buf[8 * k + j]) << np.uint64(8 * j)
        w *= _M64
        w ^= w >> _R64
        w *= _M64
        h ^= w
        h *= _M64
    tail = n & 7
    if tail:
        for j in range(tail - 1, -1, -1):
            h ^= np.uint64(buf[8 * blocks + j]) << np.uint64(8 * j)
        h *= _M64
    h ^= h >> _R64
    h *= _M64
    h ^= h >> _R64
    return h


@njit(cache=True, nogil=True)
def pair_hashes(pair_keys, id_bytes, id_off):
    """``murmurHash2_64(item_a || '\\0' || item_b)`` of each packed pair (string order), the
    same value ClickHouse materialises as ``pair_counts.pair_hash``."""
    n = pair_keys.shape[0]
    out = np.empty(n, dtype=np.uint64)
    buf = np.empty(512, dtype=np.uint8)
    for k in range(n):
        key = pair_keys[k]
        lo = np.int64((key >> _LO_SHIFT) & _ITEM_MASK)
        hi = np.int64((key >> _HI_SHIFT) & _ITEM_MASK)
        a, b = (hi, lo) if _id_less(hi, lo, id_bytes, id_off) else (lo, hi)
        la = id_off[a + 1] - id_off[a]
        lb = id_off[b + 1] - id_off[b]
        size = la + 1 + lb
        if size > buf.shape[0]:
            buf = np.empty(2 * size, dtype=np.uint8)
        buf[:la] = id_bytes[id_off[a]:id_off[a + 1]]
        buf[la] = 0
        buf[la + 1:size] = id_bytes[id_off[b]:id_off[b + 1]]
        out[k] = _murmur64a(buf, size)
    return out


def warm_up() -> None:
    """Load (or compile) every kernel now, so the first batch of a worker does not pay for it
    (loading the cached machine code takes a second or two; compiling, on a fresh install,
    longer)."""
    one = np.zeros(1, np.int64)
    hist = np.zeros((1, 2), np.int32), np.zeros((1, 2)), np.zeros(1, np.int32)
    ids, offsets = np.zeros(1, np.uint8), np.zeros(2, np.int64)
    out = np.empty(2, np.uint64)
    pair_batch(one, one, np.zeros(1), *hist, np.zeros(1, np.int32), ids, offsets, 1.0, out)
    keys, counts = aggregate(out[:0], np.empty(0, np.uint64))
    unpack_ordered(keys, ids, offsets)
    visit_keys(one, one, np.zeros(1))
    newest_times(hist[1], hist[2])
    pair_hashes(keys, ids, offsets)

