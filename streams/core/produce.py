"""Produce many keyed records with few round trips: one record batch per partition.

Why: ``AIOKafkaProducer.send`` costs ~25 µs of Python per record (a future, a partitioner
call, accumulator bookkeeping). Tier routing can emit tens of thousands of records in one
checkpoint, on the event loop the ingest consumes from, so it builds the batches itself.
Partitioning matches Kafka's default (murmur2 of the key), so a key always lands where any
other Kafka producer would put it.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Iterable, Sequence

import numpy as np

Header = tuple[str, bytes]
_SEED, _M = np.uint32(0x9747B28C), np.uint32(0x5BD1E995)


def murmur2_many(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's murmur2 hash of each key, vectorised (kafka-python's is ~4.5 µs a key).

    Same arithmetic as ``org.apache.kafka.common.utils.Utils.murmur2``: 32-bit words read
    little-endian, then the 1-3 tail bytes, then the final avalanche; uint32 wraps like Java."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.uint32)
    lengths = np.fromiter((len(k) for k in keys), np.int64, n)
    width = int(-(-lengths.max() // 4) * 4) or 4
    data = np.frombuffer(b"".join(k.ljust(width, b"\0") for k in keys), np.uint8).reshape(n, width)
    words = data.view("<u4").astype(np.uint32)
    full = lengths // 4
    with np.errstate(over="ignore"):
        h = _SEED ^ lengths.astype(np.uint32)
        for j in range(words.shape[1]):
            k = words[:, j] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            mixed = (h * _M) ^ k
            h = np.where(full > j, mixed, h)
        extra = lengths % 4
        rows = np.arange(n)
        base = (lengths & ~3).astype(np.int64)
        tail = np.zeros(n, np.uint32)
        for offset, shift in ((2, 16), (1, 8), (0, 0)):
            has = extra > offset
            byte = data[rows, np.minimum(base + offset, width - 1)].astype(np.uint32)
            tail ^= np.where(has, byte << np.uint32(shift), np.uint32(0))
        h = np.where(extra > 0, (h ^ tail) * _M, h)
        h ^= h >> np.uint32(13)
        h *= _M
        h ^= h >> np.uint32(15)
    return h


def partitions_for(keys: Sequence[bytes], n_partitions: int) -> np.ndarray:
    """Kafka's default partitioner for non-null keys: ``(murmur2(key) & 0x7fffffff) % n``."""
    return (murmur2_many(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(n_partitions)


async def send_batched(
    producer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None, Sequence[Header] | None]],
) -> int:
    """Send (key, value, headers) records in per-partition batches; wait until all are acked.
    A None value is a tombstone (compacted topics)."""
    partitions = sorted(await producer.partitions_for(topic))
    records = list(records)
    keyed = [i for i, r in enumerate(records) if r[0] is not None]
    chosen = np.arange(len(records)) % len(partitions)  # unkeyed: round robin
    if keyed:
        chosen[keyed] = partitions_for([r[0] for r in records if r[0] is not None], len(partitions))
    by_partition: dict[int, list] = {}
    for record, index in zip(records, chosen.tolist()):
        by_partition.setdefault(partitions[index], []).append(record)
    n = len(records)
    pending = []
    for p, rows in by_partition.items():
        batch = producer.create_batch()
        for key, value, headers in rows:
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                    raise ValueError(f"record of {len(value or b'')} bytes exceeds the producer's batch size")
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=p))
    for future in pending:
        await future
    return n


@contextlib.asynccontextmanager
async def open_producer(bootstrap: str, **options) -> AsyncIterator:
    """An aiokafka producer for one short job (a CLI command, a trainer job), always stopped."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()
