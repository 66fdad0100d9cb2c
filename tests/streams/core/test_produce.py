"""Batched producing: the vectorised partitioner must agree with Kafka's default one."""

from __future__ import annotations

import asyncio
import random

from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

from streams.core.produce import murmur2_many, partitions_for, send_batched
from streams.core.topics import ensure_topics


def test_murmur2_many_matches_kafka_python():
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 41))) for _ in range(3000)]
    keys += [b"", b"a", b"ab", b"abc", b"abcd", "é|ü".encode()]
    assert murmur2_many(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]
    assert partitions_for(keys, 7).tolist() == [(murmur2(k) & 0x7FFFFFFF) % 7 for k in keys]


def test_send_batched_puts_each_key_on_its_default_partition(settings, broker):
    from aiokafka import AIOKafkaProducer

    ensure_topics(broker.bootstrap, settings)
    records = [(f"k{i}".encode(), f"v{i}".encode(), [("h", b"1")]) for i in range(500)]

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            return await send_batched(producer, settings.topic_pairs_to_score, records)
        finally:
            await producer.stop()

    assert asyncio.run(go()) == 500
    consumer = KafkaConsumer(settings.topic_pairs_to_score, bootstrap_servers=broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=4000)
    seen = list(consumer)
    consumer.close()
    assert sorted(m.value for m in seen) == sorted(v for _, v, _ in records)
    n = settings.topic_partitions
    assert all(m.partition == (murmur2(m.key) & 0x7FFFFFFF) % n for m in seen)
    assert all(dict(m.headers) == {"h": b"1"} for m in seen)
