"""One dead-letter record for every consumer: a message that cannot be handled is sent, with
its original key and bytes, to that topic's dead-letter topic (``clicks-dlq``,
``pairs-to-score-dlq``, ``items-dlq``, ``model-updates-dlq``, ``training-jobs-dlq``; settings
``PAIRSTREAM_TOPIC_*_DLQ``) before the offset that covers it is committed, and the consumer
moves on.

Headers, the same on every DLQ: ``reason`` (a short code), ``detail`` (at most 1000 bytes),
``source_topic``, ``source_partition``, ``source_offset``; ``pairstream_dead_letters_total``
counts them by source topic and reason. A tombstone is kept as an empty value.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.core import metrics
from streams.core.produce import send_batched

DETAIL_BYTES = 1000


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source_topic: str
    source_partition: int = -1  # -1: not known (a message handed over without its position)
    source_offset: int = -1

    def headers(self) -> list[tuple[str, bytes]]:
        return [("reason", self.reason.encode()),
                ("detail", self.detail.encode(errors="replace")[:DETAIL_BYTES]),
                ("source_topic", self.source_topic.encode()),
                ("source_partition", str(self.source_partition).encode()),
                ("source_offset", str(self.source_offset).encode())]

    def record(self) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        return self.key, self.value or b"", self.headers()


async def send(producer, topic: str, letters: list[DeadLetter]) -> None:
    """Send ``letters`` to ``topic`` (an aiokafka producer) and wait until the broker has them."""
    if not letters:
        return
    for letter in letters:
        metrics.DLQ.labels(topic=letter.source_topic, reason=letter.reason).inc()
    await send_batched(producer, topic, [letter.record() for letter in letters])


def send_sync(producer, topic: str, letters: list[DeadLetter]) -> None:
    """``send`` for a kafka-python producer (the trainer service is synchronous)."""
    for letter in letters:
        metrics.DLQ.labels(topic=letter.source_topic, reason=letter.reason).inc()
        key, value, headers = letter.record()
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
