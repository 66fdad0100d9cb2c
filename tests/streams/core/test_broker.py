"""Round trips through a real Tansu broker with both Kafka clients, in consumer groups."""

import asyncio
import uuid

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient


def test_kafka_python_consumer_group_round_trip(broker, new_topic):
    topic = new_topic()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(300):
        producer.send(topic, key=f"k{i % 11}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, group_id=group, session_timeout_ms=6000,
        heartbeat_interval_ms=1000, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=15000)
    seen = set()
    for msg in consumer:
        seen.add(msg.value)
        if len(seen) == 300:
            break
    assert len(consumer.assignment()) == 3  # the group assigned all partitions to us
    consumer.commit()
    consumer.close()
    assert seen == {f"v{i}".encode() for i in range(300)}
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    committed = admin.list_group_offsets(group)[group]
    admin.close()
    assert sum(meta.offset for meta in committed.values()) == 300


def test_aiokafka_consumer_group_round_trip(broker, new_topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = new_topic()

    async def main():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        for i in range(200):
            await producer.send(topic, key=b"k%d" % (i % 5), value=b"%d" % i)
        await producer.flush()
        await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap, group_id=f"g-{uuid.uuid4().hex[:6]}",
            session_timeout_ms=6000, heartbeat_interval_ms=1000, auto_offset_reset="earliest",
            enable_auto_commit=False)
        await consumer.start()
        got = []
        try:
            while len(got) < 200:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 20)
                for messages in batch.values():
                    got.extend(int(m.value) for m in messages)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    assert sorted(asyncio.run(main())) == list(range(200))
