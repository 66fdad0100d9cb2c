"""The fast Sessionizer against the naive reference, including the cases its shortcuts skip."""

from __future__ import annotations

import random

from streams.benchmarks.reference import reference_counts
from streams.catalogue import Catalogue
from streams.pairing import DAY_BITS, ITEM_BITS, Sessionizer


def _decode(sessionizer, counts):
    out = {}
    for key, n in counts.items():
        pair = key >> DAY_BITS
        a, b = sessionizer.ids[pair >> ITEM_BITS], sessionizer.ids[pair & ((1 << ITEM_BITS) - 1)]
        out[(a, b, key & ((1 << DAY_BITS) - 1))] = n
    return out


def test_matches_reference_with_ties_out_of_order_and_unknown_items():
    rng = random.Random(3)
    categories = {f"i{k}": f"c{k % 4}" for k in range(30)}  # i30..i34 are unknown
    for trial in range(150):
        events = [(f"u{rng.randrange(3)}", f"i{rng.randrange(35)}",
                   float(rng.choice([rng.randrange(0, 200_000), 1000, 1000, 90_000])))
                  for _ in range(300)]
        if trial % 2 == 0:
            events.sort(key=lambda e: e[2])  # the in-order fast path
        sessionizer, counts = Sessionizer(categories, 1800, 5), {}
        for user, item, ts in events:
            sessionizer.process(user, item, ts, counts)
        assert _decode(sessionizer, counts) == dict(reference_counts(events, categories, 1800, 5))


def test_catalogue_changes_reach_cached_categories():
    catalogue = Catalogue({"a": "phone", "b": "phone"})
    sessionizer, counts = Sessionizer(catalogue, 1800, 20), {}
    sessionizer.process("u", "a", 10.0, counts)
    sessionizer.process("u", "b", 20.0, counts)
    assert counts == {}  # same category: no pair
    catalogue["b"] = "case"
    catalogue._changed(["b"])
    sessionizer.sync_catalogue()
    sessionizer.process("u", "a", 30.0, counts)
    assert _decode(sessionizer, counts) == {("a", "b", 0): 1}


def test_snapshot_restore_round_trip_keeps_pairing_identical():
    categories = {f"i{k}": f"c{k % 3}" for k in range(12)}
    events = [(f"u{k % 4}", f"i{(k * 7) % 12}", float(k * 60)) for k in range(200)]
    whole, counts_whole = Sessionizer(categories, 1800, 6), {}
    for e in events:
        whole.process(*e, counts_whole)
    first, counts_split = Sessionizer(categories, 1800, 6), {}
    for e in events[:100]:
        first.process(*e, counts_split)
    users, items, times = first.snapshot(first.histories)
    second = Sessionizer(categories, 1800, 6)
    second.restore(users, items, times)
    tail = {}
    for e in events[100:]:
        second.process(*e, tail)
    merged = _decode(first, counts_split)
    for key, n in _decode(second, tail).items():
        merged[key] = merged.get(key, 0) + n
    assert merged == _decode(whole, counts_whole)
