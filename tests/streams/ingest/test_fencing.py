"""Exactly once with several workers: a member frozen through a rebalance must not write.

Two ingests share one store and one consumer group, each on its own thread and event loop. One,
Z, is frozen (its event loop and the storage call it is making) at a chosen step: before an
intent, between an intent and its counts, in the checkpoint lane, inside its own restore; or it
revokes during a ClickHouse outage. The group drops it, the other member N takes its partitions
over and goes on; then Z wakes up. Every count must equal the reference, the intents must tile
each partition's log with no two owners' ranges overlapping, and a third member started
afterwards on more clicks must stay exact.

``PAIRSTREAM_FENCE_REPEATS=20`` repeats every case with random freeze lengths (the soak run in
docs/ingest.md); the default suite runs each once.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time

import pytest

from streams.core.storage import Storage, StorageError
from streams.core.topics import ensure_topics
from streams.dev.synthetic import generate
from streams.ingest.consumer import ClickIngest
from streams.ingest.reference import reference_counts
from tests.ingest_run import Member, loaded_catalogue, table_counts, wait_for
from tests.kafka import produce
from tests.tables import item_marginals

REPEATS = int(os.environ.get("PAIRSTREAM_FENCE_REPEATS", "1"))


class FreezableStorage(Storage):
    """The real store, with one freeze point armed by the test and an outage switch.

    Freezing blocks the storage call that hit the point *and* the member's event loop (its
    heartbeats stop, as in a paused process), until ``thaw``."""

    def __init__(self, inner: Storage):
        self.inner = inner
        self.database = inner.database
        self.loop: asyncio.AbstractEventLoop | None = None
        self._point = None  # (predicate(kind, text), calls to let pass first)
        self.frozen = threading.Event()
        self._thawed = threading.Event()
        self.down = False
        self.refused_while_down = 0

    def arm(self, predicate, skip: int = 0) -> None:
        self._point = (predicate, skip)

    def thaw(self) -> None:
        self._thawed.set()

    def _step(self, kind: str, text: str) -> None:
        if self.down:
            self.refused_while_down += 1
            raise StorageError("connection refused (simulated outage)")
        if self._point is None or not self._point[0](kind, text):
            return
        predicate, skip = self._point
        if skip:
            self._point = (predicate, skip - 1)
            return
        self._point = None
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._thawed.wait)  # the whole member stops
        self.frozen.set()
        self._thawed.wait()

    def command(self, sql, params=None):
        self._step("command", sql)
        return self.inner.command(sql, params)

    def query_arrow(self, sql, params=None):
        self._step("query", sql)
        return self.inner.query_arrow(sql, params)

    def insert_arrow(self, table, data, dedup_token=None, unique_keys=False):
        self._step("insert", table)
        return self.inner.insert_arrow(table, data, dedup_token, unique_keys)

    def insert_arrow_if(self, table, data, condition, params, dedup_token=None, unique_keys=False):
        self._step("insert", table)
        return self.inner.insert_arrow_if(table, data, condition, params, dedup_token, unique_keys)

    def settle_fenced(self):
        return self.inner.settle_fenced()

    def close(self):
        pass


def caught_up(members, end_offsets):
    held = {p: m for m in members for p in m.ingest.partitions}
    return set(end_offsets) <= set(held) and all(
        held[p].ingest.caught_up({p: e}) for p, e in end_offsets.items())


def intent_tiling(storage, topic, end_offsets):
    """Partitions whose distinct intent ranges do not tile ``[0, end)`` exactly (two owners'
    ranges overlapping, or a gap)."""
    rows = storage.query_rows(
        f"SELECT DISTINCT partition, start_offset, end_offset FROM {storage.table('ingest_batches')} "
        "WHERE topic = {t:String} ORDER BY partition, start_offset, end_offset", {"t": topic})
    bad = {}
    for p, end in end_offsets.items():
        ranges = [(s, e) for q, s, e in rows if q == p]
        position, broken = 0, []
        for start, stop in ranges:
            if start != position:
                broken.append((start, stop))
            position = stop
        if broken or position != end:
            bad[p] = (broken[:3], position, end)
    return bad


FREEZE_POINTS = {
    # (predicate on the storage step, matching steps let through first)
    "before_intent": (lambda kind, text: kind == "insert" and text == "ingest_batches", 0),
    "between_intent_and_counts": (lambda kind, text: kind == "insert" and text == "pair_counts", 1),
    "checkpoint_lane": (lambda kind, text: kind == "insert" and text == "user_sessions", 0),
    # inside its restore: sessions read, the intents not yet (the state it resumes is stale)
    "inside_restore": (lambda kind, text: kind == "query" and "GROUP BY partition, start_offset" in text, 0),
}


def _clicks(seed):
    items, clicks = generate(400, 60, 9000, seed=seed)
    return items, clicks


# every point on embedded chDB (one lock per data directory); one on the production client
# (``ServerStorage`` over clickhouse-connect's chDB interface: a connection per member, statements
# not serialised, ``insert_arrow_if`` reports no row count, so writes are verified by reading back)
CASES = [*((point, "chdb") for point in [*FREEZE_POINTS, "revoke_during_outage"]),
         ("between_intent_and_counts", "server-client")]


@pytest.mark.parametrize("repeat", range(REPEATS))
@pytest.mark.parametrize(("point", "engine"), CASES, ids=[f"{p}-{e}" for p, e in CASES])
def test_a_member_frozen_through_a_takeover_writes_nothing_late(settings, storage, server_storages, broker,
                                                                 end_offsets, point, engine, repeat):
    rng = random.Random(f"{point}-{repeat}")
    # each member's own store; ``storage`` (the same data) checks the result
    member_store = server_storages if engine == "server-client" else lambda: storage
    settings = settings.replace(ingest_batch_events=400, checkpoint_interval_s=0.1)
    ensure_topics(broker.bootstrap, settings)
    items, clicks = _clicks(seed=20 + repeat)
    categories = {item.item_id: item.category for item in items}
    # before the freeze; while Z is frozen (N goes on); after it wakes; for a third member
    waves = [clicks[:3000], clicks[3000:5000], clicks[5000:7000], clicks[7000:]]
    topic = settings.topic_clicks
    catalogue = loaded_catalogue(storage, items)
    frozen_store = FreezableStorage(member_store())
    # Z heartbeats every 2 s: once awake it reads, pairs and writes for a while before a
    # heartbeat tells it that it was dropped (a shared event loop does the same, aiokafka #678)
    z = Member(ClickIngest(settings.replace(session_timeout_s=6.0), broker.bootstrap, frozen_store, catalogue),
               frozen_store)
    n = Member(ClickIngest(settings, broker.bootstrap, member_store(), catalogue))
    send = lambda wave: produce(broker.bootstrap, topic, [(c.user_id.encode(), c.to_json()) for c in wave])  # noqa: E731

    if point == "revoke_during_outage":
        # Z alone, then its writes fail while more clicks arrive: its open batches pile up, N's
        # arrival makes it revoke, and the revoke cannot write: the group goes on without Z
        send(waves[0][:1500])
        z.start()
        wait_for(lambda: caught_up([z], end_offsets(topic)), z, what="Z consumes")
        frozen_store.down = True
        send(waves[0][1500:])
        first_ends = end_offsets(topic)
        wait_for(lambda: frozen_store.refused_while_down > 3 and z.ingest.batches.events > 0, z,
                 what="Z holds unwritten clicks in the outage")
        n.start()
        wait_for(lambda: caught_up([n], first_ends), n, z, what="N takes every partition over")
        send(waves[1])
        ends_now = end_offsets(topic)
        wait_for(lambda: caught_up([n], ends_now), n, z, what="N goes on")
        time.sleep(rng.uniform(0.0, 1.5))
        frozen_store.down = False  # the outage ends: whatever Z still holds must not land
    else:
        send(waves[0])
        first_ends = end_offsets(topic)
        predicate, skip = FREEZE_POINTS[point]
        frozen_store.arm(predicate, skip)
        z.start()
        n.start()
        wait_for(frozen_store.frozen.is_set, z, n, what=f"Z reaches {point}")
        wait_for(lambda: caught_up([n], first_ends), n, what="N takes every partition over")
        send(waves[1])  # Z, frozen, still thinks it holds its partitions: it will read these too
        ends_now = end_offsets(topic)
        wait_for(lambda: caught_up([n], ends_now), n, what="N goes on")
        time.sleep(rng.uniform(0.0, 1.5))  # how much longer Z stays frozen
        frozen_store.thaw()

    # Z wakes up; both go on with more clicks
    send(waves[2])
    second_ends = end_offsets(topic)
    wait_for(lambda: caught_up([z, n], second_ends) and z.ingest.partitions, z, n,
             what="Z re-joins and both reach the end")
    z.finish()
    n.finish()

    # a third member, on more clicks, from what the two left behind
    send(waves[3])
    last_ends = end_offsets(topic)
    # in a group of its own: Tansu keeps a member that left in the middle of a rebalance and
    # holds every later join for it (its state, not ours: ClickHouse is what C restores from)
    c = Member(ClickIngest(settings, broker.bootstrap, member_store(), catalogue,
                           group_id=f"{settings.app_id}-third"))
    c.start()
    wait_for(lambda: caught_up([c], last_ends), c, what="a third member reaches the end")
    c.finish()

    expected = reference_counts([(k.user_id, k.item_id, k.ts) for k in clicks], categories)
    got = table_counts(storage)
    doubled = sum(max(0, got.get(key, 0) - n_) for key, n_ in expected.items()) + sum(
        n_ for key, n_ in got.items() if key not in expected)
    lost = sum(max(0, n_ - got.get(key, 0)) for key, n_ in expected.items())
    assert (lost, doubled) == (0, 0), f"{point}: {lost} increments lost, {doubled} doubled"
    kept, recomputed = item_marginals(storage)  # the item marginals follow the same writes
    assert kept == recomputed
    assert intent_tiling(storage, topic, last_ends) == {}
