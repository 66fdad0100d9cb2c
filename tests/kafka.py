"""Kafka for the tests: producing test messages to the session's real broker, one way everywhere.

Async code uses ``streams.core.produce.open_producer`` (the product's own helper)."""

from __future__ import annotations


def produce(bootstrap: str, topic: str, messages, **options) -> None:
    """Send ``(key, value)`` or ``(key, value, timestamp_ms)`` messages (a ``None`` value is a
    tombstone) with kafka-python, and wait until the broker has them all."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, **{"linger_ms": 5, "max_request_size": 4 << 20,
                                                              **options})
    try:
        for key, value, *stamp in messages:
            producer.send(topic, key=key, value=value, timestamp_ms=stamp[0] if stamp else None)
        producer.flush()
    finally:
        producer.close()


def high_watermarks(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """``{partition: end}`` read from fetch high watermarks.

    Not ``KafkaConsumer.end_offsets``: Tansu answers ListOffsets(latest) with the base offset
    of the newest record batch plus one, short of the true end when the batch holds several
    records. The high watermark in a fetch response is right."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=1024, max_partition_fetch_bytes=1024)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200, max_records=1)
        return {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        consumer.close()
