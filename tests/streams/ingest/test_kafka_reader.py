"""The ingest's Kafka reader: parsed records for the ingest's consumer only, through a real broker."""

import asyncio
import uuid

from streams.ingest import kafka_reader


async def _read_all(broker, topic, total, options, tuned):
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, group_id=f"g-{uuid.uuid4().hex[:6]}",
        session_timeout_ms=6000, heartbeat_interval_ms=1000, auto_offset_reset="earliest",
        enable_auto_commit=False, **options)
    await consumer.start()
    if tuned:
        kafka_reader.tune(consumer)
    got = {}
    try:
        while sum(map(len, got.values())) < total:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                got.setdefault(tp.partition, []).extend(messages)
    finally:
        await consumer.stop()
    return got


def test_parsed_records_for_the_ingest_and_consumer_records_for_everyone_else(broker, new_topic):
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import ConsumerRecord

    topic = new_topic(2)
    sent = {(b"u%d" % (i % 7), b'{"n": %d}' % i) for i in range(120)}

    async def main():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        for key, value in sorted(sent):
            await producer.send(topic, key=key, value=value, timestamp_ms=1_700_000_000_000)
        await producer.stop()
        lean = await _read_all(broker, topic, len(sent), kafka_reader.consumer_options(), tuned=True)
        # a consumer built afterwards in the same process, as Faust's are, is untouched
        plain = await _read_all(broker, topic, len(sent), {}, tuned=False)
        return lean, plain

    lean, plain = asyncio.run(main())
    assert kafka_reader.install()  # this aiokafka has the hook the ingest relies on
    lean_records = [m for messages in lean.values() for m in messages]
    plain_records = [m for messages in plain.values() for m in messages]
    assert not any(isinstance(m, ConsumerRecord) for m in lean_records)
    assert all(isinstance(m, ConsumerRecord) for m in plain_records)
    # the four attributes the ingest reads are the same, record for record
    fields = lambda by_partition: {  # noqa: E731
        (p, m.offset, m.timestamp, m.key, m.value) for p, ms in by_partition.items() for m in ms}
    assert fields(lean) == fields(plain)
    assert {(m.key, m.value) for m in lean_records} == sent
    assert {m.timestamp for m in lean_records} == {1_700_000_000_000}
