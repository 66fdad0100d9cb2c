"""Behaviour statistics: ``user_item_days`` from the real ingest, ``pair_stats`` from ClickHouse,
both against the plain-Python reference (``streams.ingest.reference``)."""

from __future__ import annotations

import asyncio
import math

import pyarrow as pa
import pytest

from streams.core.storage import stats
from streams.ingest.consumer import ClickIngest
from streams.ingest.reference import reference_counts, reference_stats, reference_visits
from streams.ingest.user_items import SCHEMA as VISITS_SCHEMA
from tests.ingest_run import dataset, loaded_catalogue, run_until
from tests.tables import assert_stats_equal, item_marginals, table_stats, table_visits


def test_ingest_writes_user_item_days_exactly(settings, storage, broker):
    items, clicks, messages, expected = dataset(settings, broker, n_events=4000, bad_every=400)
    ingest = ClickIngest(settings, broker.bootstrap, storage, loaded_catalogue(storage, items))
    asyncio.run(run_until([ingest], len(messages)))
    assert table_visits(storage) == dict(reference_visits((c.user_id, c.item_id, c.ts) for c in clicks))
    kept, recomputed = item_marginals(storage)
    assert kept == recomputed and len(kept) > 100


def test_item_marginals_are_backfilled_once_when_the_views_arrive(settings, chdb_dir):
    """Migration 9 adds the views that keep ``item_day_clicks``: the counts written before it
    are taken once, also when a second worker runs the same migration at the same moment."""
    from streams.core.storage.chdb_client import ChdbStorage
    from streams.core.storage.migrations import _migrations, migrate

    store = ChdbStorage(chdb_dir, settings.clickhouse_database)
    try:
        migrate(store, until=8)
        assert store.query_value(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'item_day_clicks'",
            {"db": store.database}) == 0
        before = {("a", "b", 20000): 3, ("a", "c", 20000): 2, ("b", "c", 20001): 5}
        _insert(store, {}, before)
        migrate(store)
        (backfill,) = [m.statements[-1] for m in _migrations(store.database) if m.version == 9]
        store.command(backfill)  # the other worker's run of it: a dropped repeat
        _insert(store, {}, {("a", "b", 20000): 1})  # after the views: kept by them
        kept, recomputed = item_marginals(store)
        assert kept == recomputed == {("a", 20000): 6, ("b", 20000): 4, ("c", 20000): 2,
                                      ("b", 20001): 5, ("c", 20001): 5}
    finally:
        store.close()


def _insert(storage, visits: dict, counts: dict) -> None:
    rows = list(visits.items())
    storage.insert_arrow("user_item_days", pa.table({
        "user_id": [k[0] for k, _ in rows], "item_id": [k[1] for k, _ in rows],
        "day": pa.array([k[2] for k, _ in rows], pa.int32()).cast(pa.date32()),
        "clicks": pa.array([n for _, n in rows], pa.uint64())}, schema=VISITS_SCHEMA))
    rows = list(counts.items())
    storage.insert_arrow("pair_counts", pa.table({
        "item_a": [k[0] for k, _ in rows], "item_b": [k[1] for k, _ in rows],
        "day": pa.array([k[2] for k, _ in rows], pa.int32()).cast(pa.date32()),
        "count": pa.array([n for _, n in rows], pa.uint64())}))


@pytest.mark.parametrize("params", [
    stats.StatsParams(),
    # tight Swing caps (heavy users dropped, few users per item), decay, another prior
    stats.StatsParams(horizon_days=5, low=2, lift_prior=0.5, half_life_days=3.0,
                      swing_alpha=2.0, swing_max_user_items=12, swing_max_item_users=4),
    # a 50 kB budget: Swing's user pairs in several buckets, and its aggregations spill
    stats.StatsParams(memory_mb=0.05),
], ids=["defaults", "caps-and-decay", "swing-in-buckets"])
def test_pair_stats_match_the_reference(storage, params, caplog):
    from streams.dev.synthetic import generate

    items, clicks = generate(150, 40, 3000, seed=3)
    categories = {i.item_id: i.category for i in items}
    events = [(c.user_id, c.item_id, c.ts) for c in clicks]
    visits, counts = reference_visits(events), reference_counts(events, categories)
    _insert(storage, visits, counts)
    labelled = sorted(counts)[:5]
    extra = [(a, b) for a, b, _ in labelled]
    storage.insert_arrow("pair_labels", pa.table({"item_a": [a for a, _ in extra],
                                                  "item_b": [b for _, b in extra],
                                                  "score": pa.array([5.0] * len(extra), pa.float32())}))
    with caplog.at_level("INFO", logger="streams.core.storage.stats"):
        version = stats.refresh(storage, params)
    assert version is not None
    buckets = int(caplog.text.split("Swing in ")[1].split(" ")[0])
    assert (buckets > 1) == (params.memory_mb < 1), caplog.text
    want = reference_stats(visits, counts, params, extra)
    assert len(want) > 50 and any(r["swing"] > 0 for r in want.values())
    assert_stats_equal(table_stats(storage), want)
    # the labeller's on-demand evidence agrees with the refresh
    some = sorted(want)[:40]
    now = stats.pair_evidence(storage, some, params)
    for pair in some:
        for key in ("count", "users", "users_a", "users_b", "lift"):
            assert math.isclose(now[pair][key], want[pair][key], rel_tol=1e-5), (pair, key)
    # a second refresh replaces the first for readers; old versions are dropped
    stats.refresh(storage, params)
    stats.refresh(storage, params)
    assert storage.query_value(
        f"SELECT uniqExact(stats_version) FROM {storage.table('pair_stats')}") == stats.KEPT_VERSIONS
    assert_stats_equal(table_stats(storage), want)


def test_swing_buckets_follow_the_memory_budget():
    per_bucket = (1500 << 20) // stats.SWING_BYTES_PER_JOIN_ROW
    assert stats.swing_buckets(0, 1500) == 1
    assert stats.swing_buckets(per_bucket, 1500) == 1
    assert stats.swing_buckets(per_bucket + 1, 1500) == 2
    assert stats.swing_buckets(203_000_000, 1500) == 6  # 3M visits, 3,000 items (bench stats)


def test_bestseller_pairs_get_low_lift_and_fitting_pairs_high(storage):
    """The property the re-ranker needs: popularity alone does not make a pair go together."""
    visits = {}
    for u in range(200):  # everybody clicks the two bestsellers
        visits[(f"u{u:03d}", "best1", 20000)] = 1
        visits[(f"u{u:03d}", "best2", 20000)] = 1
    for u in range(0, 200, 20):  # ten users look at the niche pair, nothing else
        visits[(f"u{u:03d}", "case", 20000)] = 1
        visits[(f"u{u:03d}", "phone", 20000)] = 1
    counts = {("best1", "best2", 20000): 200, ("case", "phone", 20000): 10}
    for k in range(20):  # and each bestseller with everything else
        counts[("best1", f"other{k:02d}", 20000)] = counts[("best2", f"other{k:02d}", 20000)] = 10
    _insert(storage, visits, counts)
    stats.refresh(storage, stats.StatsParams())
    got = table_stats(storage)
    assert got[("best1", "best2")]["count"] > got[("case", "phone")]["count"]
    assert got[("case", "phone")]["lift"] > 5 * got[("best1", "best2")]["lift"]
    assert got[("case", "phone")]["jaccard"] == 1.0


def test_half_evidence_matches_a_plain_reference(storage):
    """Each half (even / odd day numbers) counts its own co-clicks against its own marginals,
    with half the pseudo-count: what the blend weight is fitted on."""
    from streams.dev.synthetic import generate

    items, clicks = generate(150, 40, 3000, seed=5)
    categories = {i.item_id: i.category for i in items}
    events = [(c.user_id, c.item_id, c.ts) for c in clicks]
    counts = reference_counts(events, categories)
    _insert(storage, reference_visits(events), counts)
    params = stats.StatsParams(horizon_days=10, lift_prior=1.0)
    newest = max(d for _, _, d in counts)
    pairs = sorted({(a, b) for a, b, d in counts if d > newest - 10})[:60] + [("zz-none", "zz-other")]
    got = stats.half_evidence(storage, pairs, params)
    assert got is not None
    for h in (0, 1):
        kept = {(a, b): 0 for a, b, _ in counts}
        margins: dict[str, int] = {}
        total = 0
        for (a, b, d), n in counts.items():
            if d % 2 == h and newest - 10 < d <= newest:
                kept[(a, b)] += n
                margins[a] = margins.get(a, 0) + n
                margins[b] = margins.get(b, 0) + n
                total += n
        count, lift = got[h]
        for k, (a, b) in enumerate(pairs):
            c = kept.get((a, b), 0)
            want = (c + 0.5) / (margins.get(a, 0) * margins.get(b, 0) / (2 * total) + 0.5)
            assert count[k] == c and math.isclose(lift[k], want, rel_tol=1e-5), (h, a, b)
    assert sum(got[0][0]) > 0 and sum(got[1][0]) > 0
    # every click on even days: no second half, no fit
    for table in ("pair_counts", "item_day_clicks"):  # the marginals follow inserts, not a TRUNCATE
        storage.command(f"TRUNCATE TABLE {storage.table(table)}")
    _insert(storage, {}, {(a, b, 2 * (d // 2)): n for (a, b, d), n in counts.items()})
    assert stats.half_evidence(storage, pairs, params) is None
