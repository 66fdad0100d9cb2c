"""Shared fixtures: a real Tansu broker per session, a fresh ClickHouse database per test.

chDB allows one data directory per process, so tests share one directory and each gets its
own database (the storage layer takes the database name from settings).
"""

from __future__ import annotations

import uuid

import pytest

from streams.core.config import Settings
from streams.core.embedded_broker import EmbeddedBroker
from streams.core.storage import open_storage


@pytest.fixture(scope="session")
def broker():
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def new_topic(broker):
    """``new_topic(partitions) -> name``: a fresh topic on the session's broker."""
    from kafka.admin import KafkaAdminClient, NewTopic

    def create(partitions: int = 3) -> str:
        name = f"rt-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(name, partitions, 1)])
        admin.close()
        return name

    return create


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("chdb-data")


@pytest.fixture
def settings(chdb_dir, tmp_path):
    unique = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=str(tmp_path),
        clickhouse_database=f"t_{unique}",
        app_id=f"test-{unique}",
        topic_clicks=f"clicks-{unique}",
        topic_items=f"items-{unique}",
        topic_clicks_dlq=f"clicks-dlq-{unique}",
        topic_pairs_to_score=f"pairs-to-score-{unique}",
        topic_pairs_to_score_dlq=f"pairs-to-score-dlq-{unique}",
        topic_items_dlq=f"items-dlq-{unique}",
        topic_model_updates=f"model-updates-{unique}",
        topic_model_updates_dlq=f"model-updates-dlq-{unique}",
        topic_training_jobs_dlq=f"training-jobs-dlq-{unique}",
        ingest_flush_ms=100,
        # Tansu holds a group join for half the session timeout: 1 s per consumer start instead
        # of 3 s, and a crashed member expires in 2 s (heartbeats every 0.67 s)
        session_timeout_s=2.0,
    )


@pytest.fixture
def read_dead_letters(broker):
    """read(topic, n) -> [(value, headers as str)] of the first n messages of a DLQ, in order."""
    from kafka import KafkaConsumer

    def read(topic: str, n: int) -> list[tuple[bytes, dict[str, str]]]:
        consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=5000)
        try:
            got = []
            for message in consumer:
                got.append((message.value, {k: v.decode() for k, v in message.headers}))
                if len(got) == n:
                    break
            return sorted(got, key=lambda m: (m[1]["source_partition"], int(m[1]["source_offset"])))
        finally:
            consumer.close()
    return read


@pytest.fixture
def storage(settings, chdb_dir):
    from streams.core.storage.chdb_client import ChdbStorage
    from streams.core.storage.migrations import migrate

    store = ChdbStorage(chdb_dir, settings.clickhouse_database)
    migrate(store)
    yield store
    store.close()


@pytest.fixture
def server_storages(chdb_dir, settings):
    """``open() -> ServerStorage`` on the test's database: the production client code
    (clickhouse-connect) over its in-process chDB interface, on the session's data directory
    (chDB serves one directory per process; ``ChdbStorage`` objects there see the same data).
    Each call is its own client, as each worker process has its own connection."""
    from streams.core.storage.server_client import ServerStorage

    opened = []

    def open_server_storage():
        opened.append(ServerStorage(f"chdb://{chdb_dir}", database=settings.clickhouse_database))
        return opened[-1]

    yield open_server_storage
    for store in opened:
        store.close()


@pytest.fixture
def open_settings_storage(settings):
    return lambda: open_storage(settings)


@pytest.fixture
def end_offsets(broker):
    """``end_offsets(topic) -> {partition: end}`` on the session's broker (``high_watermarks``)."""
    from tests.kafka import high_watermarks

    def read(topic: str) -> dict[int, int]:
        return high_watermarks(broker.bootstrap, topic)

    return read
