"""The durable embedded log (``embedded_log = durable``): Tansu's ``s3://`` engine on the
embedded SeaweedFS keeps messages, group offsets and the ingest's exactness through a crash
(SIGKILL) of the broker and of its S3 server, restarted on the same data directory."""

from __future__ import annotations

import pytest

from streams.core.embedded_broker import EmbeddedBroker
from streams.core.embedded_s3 import BUCKET, EmbeddedObjectStore
from streams.core.topics import ensure_topics
from streams.dev.synthetic import generate
from streams.ingest.consumer import ClickIngest
from streams.ingest.reference import reference_counts
from streams.worker import embedded_broker
from tests.ingest_run import Member, loaded_catalogue, table_counts, wait_for
from tests.kafka import high_watermarks, produce


class DurableLog:
    """The object store and the broker, started and crashed the way a machine does."""

    def __init__(self, settings):
        self.settings = settings
        self.port: int | None = None
        self.store: EmbeddedObjectStore | None = None
        self.broker: EmbeddedBroker | None = None

    def start(self) -> str:
        self.store = EmbeddedObjectStore(f"{self.settings.data_dir}/log").start()
        self.broker = EmbeddedBroker(self.port, storage_engine=f"s3://{BUCKET}/",
                                     environment=self.store.environment()).start()
        self.port = self.broker.port  # clients keep their bootstrap address across the crash
        return self.broker.bootstrap

    def crash(self) -> None:
        self.broker.kill()
        self.store.kill()

    def stop(self) -> None:
        for part in (self.broker, self.store):
            if part is not None:
                part.stop()


@pytest.fixture
def durable(settings, tmp_path):
    log = DurableLog(settings.replace(data_dir=str(tmp_path / "state"), embedded_log="durable"))
    yield log
    log.stop()


def test_messages_and_group_offsets_survive_a_crash_of_the_broker_and_its_storage(durable):
    from kafka import KafkaConsumer

    bootstrap = durable.start()
    topic = durable.settings.topic_clicks
    ensure_topics(bootstrap, durable.settings)
    sent = [(f"u{i}".encode(), f"click {i}".encode()) for i in range(3000)]
    produce(bootstrap, topic, sent)

    def consumer():
        return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="durable-readers",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_wait_ms=durable.settings.fetch_wait_ms(50), consumer_timeout_ms=15000,
                             session_timeout_ms=6000)  # Tansu holds a join for half of it

    first = consumer()
    read = []
    for message in first:
        read.append(message.value)
        if len(read) == 1000:
            break
    first.commit()
    first.close()

    durable.crash()
    durable.start()
    produce(bootstrap, topic, [(b"late", b"after the crash")])
    rest = consumer()
    for message in rest:
        read.append(message.value)
        if len(read) == 3001:
            break
    rest.close()
    # nothing lost, nothing read twice: the committed offsets came back with the messages
    assert sorted(read) == sorted([value for _, value in sent] + [b"after the crash"])
    assert sum(high_watermarks(bootstrap, topic).values()) == 3001


def test_the_ingest_counts_every_click_once_through_a_crash_of_the_log(durable, storage):
    settings = durable.settings.replace(ingest_batch_events=500, checkpoint_interval_s=0.2,
                                        clickhouse_database=storage.database)
    assert settings.offset_reset_policy == "fail"  # the log is kept: a reset would be a real loss
    bootstrap = durable.start()
    ensure_topics(bootstrap, settings)
    items, clicks = generate(400, 60, 8000, seed=31)
    catalogue = loaded_catalogue(storage, items)
    topic = settings.topic_clicks
    send = lambda wave: produce(bootstrap, topic, [(c.user_id.encode(), c.to_json()) for c in wave])  # noqa: E731

    def caught_up(member):
        ends = high_watermarks(bootstrap, topic)
        return set(ends) <= set(member.ingest.partitions) and member.ingest.caught_up(ends)

    send(clicks[:4000])
    member = Member(ClickIngest(settings, bootstrap, storage, catalogue))
    member.start()
    wait_for(lambda: member.ingest.totals["events"] >= 1500, member, what="the ingest reads the first clicks")
    durable.crash()  # mid-stream: the ingest's connections break; it keeps trying
    durable.start()
    send(clicks[4000:6000])
    wait_for(lambda: caught_up(member), member, what="the ingest goes on after the restart")
    member.finish()
    # a later worker on the same log and tables: resumes from its group's offsets, no rewind
    send(clicks[6000:])
    after = Member(ClickIngest(settings, bootstrap, storage, catalogue))
    after.start()
    wait_for(lambda: caught_up(after), after, what="a restarted ingest reaches the end")
    after.finish()
    assert member.ingest.resets == {} and after.ingest.resets == {}  # no offset reset seen

    expected = reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks],
                                {item.item_id: item.category for item in items})
    got = table_counts(storage)
    lost = sum(max(0, n - got.get(key, 0)) for key, n in expected.items())
    doubled = sum(max(0, got.get(key, 0) - n) for key, n in expected.items()) + sum(
        n for key, n in got.items() if key not in expected)
    assert (lost, doubled) == (0, 0), f"{lost} increments lost, {doubled} doubled"


def test_the_worker_stack_starts_and_stops_the_durable_log(settings, tmp_path):
    durable_settings = settings.replace(data_dir=str(tmp_path / "state"), embedded_log="durable")
    with embedded_broker(durable_settings) as broker:
        ensure_topics(broker.bootstrap, durable_settings)
        produce(broker.bootstrap, durable_settings.topic_items, [(b"i1", b"kept")])
    assert not broker.running  # stopped with the block
    with embedded_broker(durable_settings) as broker:  # a restart on the same data directory
        assert sum(high_watermarks(broker.bootstrap, durable_settings.topic_items).values()) == 1
