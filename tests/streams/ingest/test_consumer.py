"""Click ingest end to end on Tansu + chDB, against the reference semantics."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from kafka import KafkaConsumer

from streams.core.storage import StorageError
from streams.core.topics import ensure_topics
from streams.dev.synthetic import generate
from streams.ingest.consumer import ClickIngest
from streams.ingest.reference import reference_counts, reference_visits
from tests.ingest_run import BAD, dataset, loaded_catalogue, run_until, table_counts
from tests.kafka import produce


def test_counts_exact_and_bad_events_dead_lettered(settings, storage, broker):
    items, clicks, messages, expected = dataset(settings, broker, bad_every=500)
    ingest = ClickIngest(settings, broker.bootstrap, storage, loaded_catalogue(storage, items))
    assert asyncio.run(run_until([ingest], len(messages))) == len(messages)
    assert table_counts(storage) == dict(expected)
    n_bad = len(messages) - len(clicks)
    assert ingest.totals["invalid"] == n_bad
    dlq = KafkaConsumer(settings.topic_clicks_dlq, bootstrap_servers=broker.bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=5000)
    dead = list(dlq)
    dlq.close()
    assert len(dead) == n_bad
    for msg in dead:
        headers = dict(msg.headers)
        assert msg.value in BAD  # the original bytes, untouched
        assert headers["reason"].decode() in ("bad_json", "missing_field", "bad_type", "bad_ts", "too_large")
        assert int(headers["source_offset"]) >= 0 and headers["source_topic"].decode() == settings.topic_clicks
    # every tier crossing was routed exactly once per pair and tier
    routed = KafkaConsumer(settings.topic_pairs_to_score, bootstrap_servers=broker.bootstrap,
                           auto_offset_reset="earliest", consumer_timeout_ms=5000)
    seen = [orjson.loads(m.value) for m in routed]
    routed.close()
    totals = {}
    for (a, b, _), n in expected.items():
        totals[(a, b)] = totals.get((a, b), 0) + n
    want = {(a, b) for (a, b), n in totals.items() if n >= settings.tier_low}
    assert {(r["item_a"], r["item_b"]) for r in seen} == want
    assert len(seen) == len({(r["item_a"], r["item_b"], r["tier"]) for r in seen})


def test_poison_pills_are_dead_lettered_and_the_clicks_behind_them_counted(settings, storage, broker):
    """A 2000-deep nested extra field (RecursionError in msgspec) and clicks from 2100 and
    2156 whose Kafka CreateTime matches (so not "future"): once they crashed the worker on
    every restart at the same offset. Now: DLQ with a reason, every good click counted."""
    items, clicks = generate(200, 30, 1500, seed=5)
    ensure_topics(broker.bootstrap, settings)
    deep = (b'{"event_id":"d","user_id":"%s","item_id":"%s","ts":%d,"x":%s}'
            % (clicks[0].user_id.encode(), clicks[0].item_id.encode(), int(clicks[0].ts),
               b"[" * 2000 + b"]" * 2000))
    poison = {500: (deep, None), 900: (b'{"event_id":"y","user_id":"u","item_id":"i","ts":5900000000}',
                                       5_900_000_000_000),
              1200: (b'{"event_id":"z","user_id":"u","item_id":"i","ts":4102444800.5}', 4_102_444_800_500)}
    messages = []
    for i, click in enumerate(clicks):
        messages.append((click.user_id.encode(), click.to_json()))
        if i in poison:
            messages.append((click.user_id.encode(), *poison[i]))
    produce(broker.bootstrap, settings.topic_clicks, messages)
    ingest = ClickIngest(settings, broker.bootstrap, storage, loaded_catalogue(storage, items))
    total = len(clicks) + len(poison)
    assert asyncio.run(run_until([ingest], total)) == total
    categories = {item.item_id: item.category for item in items}
    expected = reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks], categories)
    assert table_counts(storage) == dict(expected)
    dlq = KafkaConsumer(settings.topic_clicks_dlq, bootstrap_servers=broker.bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=5000)
    reasons = sorted(dict(m.headers)["reason"].decode() for m in dlq)
    dlq.close()
    assert reasons == ["bad_json", "bad_ts", "bad_ts"]


def _first_log(settings, storage, broker, n_clicks: int, seed: int):
    """A first log counted to its end: (catalogue, categories, its reference counts, the ingest)."""
    items, clicks = generate(300, 40, n_clicks, seed=seed)
    categories = {item.item_id: item.category for item in items}
    catalogue = loaded_catalogue(storage, items)
    ensure_topics(broker.bootstrap, settings)
    produce(broker.bootstrap, settings.topic_clicks, [(c.user_id.encode(), c.to_json()) for c in clicks])
    first = ClickIngest(settings, broker.bootstrap, storage, catalogue)
    assert asyncio.run(run_until([first], len(clicks))) == len(clicks)
    return catalogue, categories, reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks], categories), first


def test_restart_against_a_new_log_fails_loudly_or_rewinds_exactly(settings, storage, broker):
    """The embedded broker keeps topics in memory, so restarting it gives a log whose end is
    below the restored checkpoints. Once the ingest seeked there and waited forever (silent
    loss, lag zero). Now ``fail`` pauses the partitions and says why (``/readyz`` not ready),
    ``rewind`` starts them over and counts the new log exactly, next to the old counts."""
    from streams.core.embedded_broker import EmbeddedBroker
    from streams.serving.http import assignment_check

    catalogue, categories, old, _ = _first_log(settings, storage, broker, 4000, seed=21)
    later = generate(300, 40, 4000, seed=21)[1][:300]  # the new log: far fewer messages than the checkpoints' offsets
    with EmbeddedBroker() as restarted:
        ensure_topics(restarted.bootstrap, settings)
        produce(restarted.bootstrap, settings.topic_clicks, [(c.user_id.encode(), c.to_json()) for c in later])

        # small fetches: each partition's records pass the hold limit while it restores, so
        # the partition is paused for holding too; ``fail`` must keep it paused, ``rewind``
        # must resume it
        small = settings.replace(ingest_batch_events=20)
        paused = ClickIngest(small.replace(on_offset_reset="fail"), restarted.bootstrap, storage, catalogue)
        still_paused = []
        original_stop = paused.stop

        async def stop_noting_paused():
            still_paused.extend(tp.partition for tp in paused._consumer.paused())
            await original_stop()

        paused.stop = stop_noting_paused
        asyncio.run(run_until([paused], timeout=8, total=1))
        assert paused.totals["events"] == 0 and len(paused.resets) == settings.topic_partitions
        assert sorted(still_paused) == list(range(settings.topic_partitions))
        assert "beyond the end" in next(iter(paused.resets.values()))
        ready, detail = asyncio.run(assignment_check(paused.held)())
        assert not ready and "PAIRSTREAM_ON_OFFSET_RESET=fail" in detail
        assert table_counts(storage) == dict(old)  # nothing written while paused

        rewound = ClickIngest(small.replace(on_offset_reset="rewind"), restarted.bootstrap, storage, catalogue)
        assert asyncio.run(run_until([rewound], len(later))) == len(later)
    new = reference_counts([(c.user_id, c.item_id, c.ts) for c in later], categories)
    assert table_counts(storage) == dict(old + new)


def test_clean_restart_at_the_end_of_multi_record_batches_declares_no_reset(settings, storage, broker,
                                                                          end_offsets):
    """Tansu answers ListOffsets(latest) with the newest batch's base offset + 1, short of the
    true end when that batch holds several records. A partition checkpointed at its true end and
    restarted against the same broker, with nothing new to fetch, must not look "beyond the end":
    with ``rewind`` (the embedded default) it would count the whole log again."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.core import metrics

    items, clicks = generate(300, 40, 3000, seed=5)
    catalogue = loaded_catalogue(storage, items)
    ensure_topics(broker.bootstrap, settings)
    produce(broker.bootstrap, settings.topic_clicks, [(c.user_id.encode(), c.to_json()) for c in clicks])
    true_end = end_offsets(settings.topic_clicks)
    reader = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    listed = reader.end_offsets([TopicPartition(settings.topic_clicks, p) for p in true_end])
    reader.close()
    short = {tp.partition for tp, end in listed.items() if end < true_end[tp.partition]}
    assert short, f"the case under test: ListOffsets {listed} short of the true end {true_end}"
    rewind = settings.replace(on_offset_reset="rewind")
    first = ClickIngest(rewind, broker.bootstrap, storage, catalogue)
    asyncio.run(run_until([first], end_offsets=true_end))
    expected = dict(reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks],
                                     {item.item_id: item.category for item in items}))
    assert table_counts(storage) == expected

    resets = metrics.OFFSET_RESETS.labels(policy="rewind")._value.get()
    again = ClickIngest(rewind, broker.bootstrap, storage, catalogue)
    restored_at: list[float] = []

    def settled() -> bool:  # every partition restored, then a few more fetches
        if len(again.partitions) < len(true_end):
            return False
        restored_at.append(time.monotonic())
        return time.monotonic() - restored_at[0] > 2.0

    asyncio.run(run_until([again], timeout=30, end_offsets=None, total=None, until=settled))
    assert len(again.partitions) == len(true_end) and not again.resets
    assert metrics.OFFSET_RESETS.labels(policy="rewind")._value.get() == resets
    assert again.totals["events"] == 0 and table_counts(storage) == expected
    assert {p: state.position for p, state in again.partitions.items()} == true_end


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy", "gzip"])
def test_librdkafka_producer_into_the_embedded_broker_is_counted_exactly(settings, storage, broker, codec):
    """Many event pipelines produce with librdkafka (confluent-kafka), not kafka-python: its
    batches, compression and idempotent producer must reach the ingest the same way. (lz4,
    snappy and zstd once stalled the ingest: aiokafka needs cramjam for them.)"""
    from confluent_kafka import Producer

    items, clicks = generate(300, 40, 1500, seed=8)
    ensure_topics(broker.bootstrap, settings)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                         "enable.idempotence": True, "compression.type": codec})
    failures = []
    for click in clicks:
        producer.produce(settings.topic_clicks, key=click.user_id.encode(), value=click.to_json(),
                         on_delivery=lambda err, _msg: err and failures.append(err))
        producer.poll(0)
    assert producer.flush(30) == 0 and not failures
    ingest = ClickIngest(settings, broker.bootstrap, storage, loaded_catalogue(storage, items))
    assert asyncio.run(run_until([ingest], len(clicks))) == len(clicks)
    categories = {item.item_id: item.category for item in items}
    expected = reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks], categories)
    assert table_counts(storage) == dict(expected)


class SimulatedCrash(Exception):
    """The process 'dies' right after a write: nothing after it happens."""


class FlakyStorage:
    """Real chDB underneath; fails chosen calls like an unreachable server would."""

    def __init__(self, inner, fail_table=None, fail_times=0, down_for_s=0.0):
        self.inner, self.fail_table, self.fail_times = inner, fail_table, fail_times
        self.down_until = time.monotonic() + down_for_s
        self.failures = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _maybe_fail(self):
        if time.monotonic() < self.down_until:
            self.failures += 1
            raise StorageError("connection refused (simulated outage)")

    def insert_arrow(self, table, data, dedup_token=None, unique_keys=False):
        self._maybe_fail()
        if table == self.fail_table and self.fail_times > 0:
            self.fail_times -= 1
            self.inner.insert_arrow(table, data, dedup_token, unique_keys)
            raise SimulatedCrash(table)
        return self.inner.insert_arrow(table, data, dedup_token, unique_keys)

    def insert_arrow_if(self, table, data, condition, params, dedup_token=None, unique_keys=False):
        self._maybe_fail()
        if table == self.fail_table and self.fail_times > 0:
            self.fail_times -= 1
            self.inner.insert_arrow_if(table, data, condition, params, dedup_token, unique_keys)
            raise SimulatedCrash(table)
        return self.inner.insert_arrow_if(table, data, condition, params, dedup_token, unique_keys)

    def query_arrow(self, sql, params=None):
        self._maybe_fail()
        return self.inner.query_arrow(sql, params)


@pytest.mark.parametrize("crash_after", ["ingest_batches", "pair_counts", "user_item_days", "pair_tiers",
                                         "user_sessions"])
def test_crash_mid_batch_then_restart_is_exact(settings, storage, broker, end_offsets, crash_after):
    # small batches and frequent checkpoints: the crash lands mid-stream, after a checkpoint
    # (records fetched while partitions restore are held up to 700 each, then paused: the
    # first checkpoint cannot cover a partition's ~2500)
    items, clicks, messages, expected = dataset(settings, broker, n_events=10000)
    catalogue = loaded_catalogue(storage, items)
    fast = settings.replace(ingest_batch_events=700, checkpoint_interval_s=0.0)
    first = ClickIngest(fast, broker.bootstrap,
                        FlakyStorage(storage, crash_after, fail_times=2), catalogue)

    async def crash():
        await first.start()
        try:
            await first.run()
        except SimulatedCrash:
            pass  # the process "dies": nothing after the write happens, no offset commit
        finally:
            await first.abort()

    asyncio.run(crash())
    # it really stopped part way: counts short of the input or, for a crash in the checkpoint
    # lane (whose count writes may all have landed meanwhile), sessions short of the log's end
    saved = dict(storage.query_rows(
        f"SELECT partition, max(version) FROM {storage.table('user_sessions')} GROUP BY partition"))
    assert table_counts(storage) != dict(expected) or any(
        saved.get(p, 0) < end for p, end in end_offsets(settings.topic_clicks).items())
    second = ClickIngest(settings, broker.bootstrap, storage, catalogue)
    asyncio.run(run_until([second], end_offsets=end_offsets(settings.topic_clicks)))
    assert table_counts(storage) == dict(expected)
    visits = storage.query_rows(
        f"SELECT user_id, item_id, toUInt32(day), sum(clicks) FROM {storage.table('user_item_days')} "
        "GROUP BY user_id, item_id, day")
    assert {(u, i, d): n for u, i, d, n in visits} == dict(
        reference_visits((c.user_id, c.item_id, c.ts) for c in clicks))


def test_clickhouse_outage_backs_off_and_catches_up(settings, storage, broker):
    items, clicks, messages, expected = dataset(settings, broker, n_events=3000)
    catalogue = loaded_catalogue(storage, items)
    flaky = FlakyStorage(storage, down_for_s=4.0)
    ingest = ClickIngest(settings.replace(storage_retry_max_s=0.5), broker.bootstrap, flaky, catalogue)
    asyncio.run(run_until([ingest], len(messages)))
    assert flaky.failures > 3  # it did hit the outage and retried
    assert table_counts(storage) == dict(expected)


def test_two_workers_split_partitions_and_stay_exact(settings, storage, broker):
    items, clicks, messages, expected = dataset(settings, broker, n_events=6000)
    catalogue = loaded_catalogue(storage, items)
    workers = [ClickIngest(settings, broker.bootstrap, storage, catalogue) for _ in range(2)]
    asyncio.run(run_until(workers, len(messages)))
    assert all(w.totals["events"] > 0 for w in workers)  # the group split the partitions
    assert table_counts(storage) == dict(expected)


def test_compacting_the_intern_tables_mid_stream_keeps_counts_exact(settings, storage, broker, monkeypatch):
    """Checkpoints evict idle users and re-intern ids (here at every chance: minimum 1) while
    batches stream through: counts stay exact and sessions restore like before."""
    from streams.ingest import sessions as pairing

    monkeypatch.setattr(pairing, "COMPACT_MIN_IDS", 1)
    rebuilt = []
    compact = pairing.Sessionizer.compact

    def counting(self, force=False):
        done = compact(self, force)
        rebuilt.append(done)
        return done

    monkeypatch.setattr(pairing.Sessionizer, "compact", counting)
    items, clicks, messages, expected = dataset(settings, broker, n_events=6000)
    settings = settings.replace(checkpoint_interval_s=0.0, ingest_batch_events=200)
    ingest = ClickIngest(settings, broker.bootstrap, storage, loaded_catalogue(storage, items))
    asyncio.run(run_until([ingest], len(messages)))
    assert sum(rebuilt) >= 3, rebuilt
    assert table_counts(storage) == dict(expected)


def test_clicks_stamped_decades_ahead_neither_hide_crossings_nor_move_the_horizon(settings, storage, broker):
    """Two clicks by one client stamped 2099-12-31, with a matching Kafka CreateTime (so they
    are valid, not "future"), in the middle of a day's traffic. They once ended the crossing
    check's horizon in 2099 (hiding that checkpoint's crossings) and the statistics' horizon
    too (no publish candidates). Now every honest crossing is routed, the forged pair is
    counted on its day, and the horizon ends on the honest newest day."""
    from streams.core.storage.stats import StatsParams, horizon, refresh

    items, clicks = generate(400, 60, 6000, seed=11)
    ensure_topics(broker.bootstrap, settings)
    forged_ts = 4_102_444_000.0  # 2099-12-31
    forged = [(b"forger", orjson.dumps({"event_id": f"f{k}", "user_id": "forger", "item_id": item.item_id,
                                         "ts": forged_ts + k}), int((forged_ts + k) * 1000))
              for k, item in enumerate(items[:2])]
    messages = [(c.user_id.encode(), c.to_json()) for c in clicks]
    produce(broker.bootstrap, settings.topic_clicks, messages[:3001] + forged + messages[3001:])
    ingest = ClickIngest(settings, broker.bootstrap, storage, loaded_catalogue(storage, items))
    assert asyncio.run(run_until([ingest], len(clicks) + 2)) == len(clicks) + 2
    categories = {item.item_id: item.category for item in items}
    events = [(c.user_id, c.item_id, c.ts) for c in clicks] + [("forger", items[k].item_id, forged_ts + k)
                                                                for k in range(2)]
    expected = reference_counts(events, categories)
    assert table_counts(storage) == dict(expected)
    forged_day = int(forged_ts // 86400)
    assert any(day == forged_day for _, _, day in expected)  # the forged pair was counted, on its day
    routed = KafkaConsumer(settings.topic_pairs_to_score, bootstrap_servers=broker.bootstrap,
                           auto_offset_reset="earliest", consumer_timeout_ms=5000)
    seen = {(r["item_a"], r["item_b"]) for r in (orjson.loads(m.value) for m in routed)}
    routed.close()
    totals: dict = {}
    for (a, b, _), n in expected.items():
        totals[(a, b)] = totals.get((a, b), 0) + n
    assert seen == {pair for pair, n in totals.items() if n >= settings.tier_low} and seen
    honest_last = max(int(c.ts // 86400) for c in clicks)
    span = horizon(storage, settings.horizon_days)
    assert span is not None and (span[1] - span[0]).days == settings.horizon_days - 1
    assert (span[1].toordinal() - 719163) == honest_last  # days since 1970-01-01
    version = refresh(storage, StatsParams.from_settings(settings))
    candidates = storage.query_value(f"SELECT count() FROM {storage.table('pair_stats')} "
                                     "WHERE stats_version = {v:UInt64}", {"v": version})
    assert candidates >= len(seen)  # every routed pair is a candidate of the statistics
    from streams.publishing.publisher import candidate_pairs

    assert candidate_pairs(storage, settings).num_rows >= len(seen)  # and of the publisher


def test_a_refilled_log_longer_than_the_checkpoints_is_not_taken_for_the_old_one(settings, storage, broker):
    """Restart the embedded broker while producers reconnect before the worker rejoins: the
    new in-memory log is already longer than the old checkpoints, so every offset check
    passes. An audit lost 3,600 of 5,400 increments that way with ``/readyz`` green. Now the
    record each checkpoint covers is read back and does not match: ``fail`` pauses every
    partition and says why, ``rewind`` counts the whole new log exactly, next to the old."""
    from streams.core.embedded_broker import EmbeddedBroker
    from streams.serving.http import assignment_check

    catalogue, categories, old, first = _first_log(settings, storage, broker, 2000, seed=21)
    checkpoints = {p: state.position for p, state in first.partitions.items()}

    _, later = generate(300, 40, 8000, seed=22)  # other users' clicks, four times as many
    with EmbeddedBroker() as restarted:
        ensure_topics(restarted.bootstrap, settings)
        produce(restarted.bootstrap, settings.topic_clicks, [(c.user_id.encode(), c.to_json()) for c in later])
        from kafka import KafkaConsumer, TopicPartition

        reader = KafkaConsumer(bootstrap_servers=restarted.bootstrap)
        ends = reader.end_offsets([TopicPartition(settings.topic_clicks, p) for p in checkpoints])
        reader.close()
        assert all(ends[TopicPartition(settings.topic_clicks, p)] > checkpoints[p] for p in checkpoints)

        paused = ClickIngest(settings.replace(on_offset_reset="fail"), restarted.bootstrap, storage, catalogue)
        asyncio.run(run_until([paused], timeout=8, total=1))
        assert paused.totals["events"] == 0 and sorted(paused.resets) == sorted(checkpoints)
        assert all("another log" in detail for detail in paused.resets.values())
        ready, detail = asyncio.run(assignment_check(paused.held)())
        assert not ready and "PAIRSTREAM_ON_OFFSET_RESET=fail" in detail
        assert table_counts(storage) == dict(old)  # nothing written while paused

        rewound = ClickIngest(settings.replace(on_offset_reset="rewind"), restarted.bootstrap, storage, catalogue)
        assert asyncio.run(run_until([rewound], len(later))) == len(later)
        assert not rewound.resets
        again = ClickIngest(settings.replace(on_offset_reset="fail"), restarted.bootstrap, storage, catalogue)
        asyncio.run(run_until([again], timeout=6, total=1))
        assert not again.resets  # the new log's own checkpoints prove it
    new = reference_counts([(c.user_id, c.item_id, c.ts) for c in later], categories)
    assert table_counts(storage) == dict(old + new)


def test_a_recreated_and_refilled_topic_is_another_log_under_fail(settings, storage, broker):
    """The same on a broker that keeps running: the clicks topic deleted, created again and
    refilled past the checkpoints (as on a real Kafka). Under ``fail`` every partition is
    paused with the reason, nothing of the new log is counted against the old sessions."""
    from kafka.admin import KafkaAdminClient

    catalogue, _, old, first = _first_log(settings, storage, broker, 2000, seed=23)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.delete_topics([settings.topic_clicks])
    admin.close()
    deadline = time.monotonic() + 30
    while True:  # the deletion may take a moment to settle
        try:
            ensure_topics(broker.bootstrap, settings)
            break
        except Exception:  # noqa: BLE001 - TopicAlreadyExists while the old one goes
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    _, later = generate(300, 40, 8000, seed=24)
    produce(broker.bootstrap, settings.topic_clicks, [(c.user_id.encode(), c.to_json()) for c in later])
    paused = ClickIngest(settings.replace(on_offset_reset="fail"), broker.bootstrap, storage, catalogue)
    asyncio.run(run_until([paused], timeout=8, total=1))
    assert paused.totals["events"] == 0 and sorted(paused.resets) == sorted(first.partitions)
    assert all("another log" in detail for detail in paused.resets.values())
    assert table_counts(storage) == dict(old)


def test_clicks_wait_for_the_items_created_before_them(settings, storage, broker, monkeypatch):
    """A fresh worker fed items and clicks at once (``pairstream replay --items --clicks``)
    once read every click before its catalogue had the items, and counted nothing. The ingest's
    follower reads the whole items topic, and each fetch of clicks waits until the items created
    before those clicks are in the catalogue: the counts are exact, no click met an unknown item.
    The follower is held back 3 s here (a slow start), so the clicks arrive first."""
    from streams.core import metrics
    from streams.ingest.catalogue import Catalogue
    from streams.ingest.catalogue_follower import CatalogueFollower

    follow = CatalogueFollower.run

    async def slow_start(self):
        await asyncio.sleep(3.0)
        await follow(self)

    monkeypatch.setattr(CatalogueFollower, "run", slow_start)

    items, clicks = generate(400, 60, 6000, seed=31)
    ensure_topics(broker.bootstrap, settings)
    produce(broker.bootstrap, settings.topic_items, [(i.item_id.encode(), i.to_json()) for i in items])
    produce(broker.bootstrap, settings.topic_clicks, [(c.user_id.encode(), c.to_json()) for c in clicks])
    unknown_before = metrics.UNKNOWN_ITEMS._value.get()
    synced_before = metrics.CATALOGUE_WAITS.labels(outcome="synced")._value.get()
    catalogue = Catalogue()  # empty: nothing loaded from the table, as on a fresh data dir
    ingest = ClickIngest(settings, broker.bootstrap, storage, catalogue, follow_items=True)
    assert asyncio.run(run_until([ingest], len(clicks))) == len(clicks)
    expected = reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks],
                                {item.item_id: item.category for item in items})
    assert table_counts(storage) == dict(expected) and expected
    assert len(catalogue) == len(items) and metrics.UNKNOWN_ITEMS._value.get() == unknown_before
    assert metrics.CATALOGUE_WAITS.labels(outcome="synced")._value.get() > synced_before


def test_two_workers_each_know_every_item(settings, storage, broker):
    """With several workers the items partitions are split among their catalogue agents, and
    each worker's pairing once knew only its own share of the items. Each ingest's follower
    reads every items partition: both catalogues hold all items, and the counts are exact."""
    from streams.ingest.catalogue import Catalogue

    items, clicks = generate(400, 60, 6000, seed=37)
    ensure_topics(broker.bootstrap, settings)
    produce(broker.bootstrap, settings.topic_items, [(i.item_id.encode(), i.to_json()) for i in items])
    produce(broker.bootstrap, settings.topic_clicks, [(c.user_id.encode(), c.to_json()) for c in clicks])
    catalogues = [Catalogue(), Catalogue()]
    workers = [ClickIngest(settings, broker.bootstrap, storage, c, follow_items=True) for c in catalogues]
    assert asyncio.run(run_until(workers, len(clicks))) == len(clicks)
    assert [len(c) for c in catalogues] == [len(items)] * 2
    assert all(len(w.partitions) < settings.topic_partitions for w in workers)  # the clicks were split
    expected = reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks],
                                {item.item_id: item.category for item in items})
    assert table_counts(storage) == dict(expected)
