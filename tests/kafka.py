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
