"""Does a click checkpoint belong to the log it is restored against?

Offsets alone cannot say. Restart the embedded broker (it keeps topics in memory) while
producers reconnect before the worker rejoins, or recreate a topic and refill it, and the new
log may already be longer than the old checkpoint: every offset check passes, and the worker
skips the new log's first messages and sends later ones to sessions of the old log (an audit
lost 3,600 of 5,400 increments that way, with ``/readyz`` green).

So each checkpoint also records a mark of the last record it covers (offset ``position - 1``):
its Kafka timestamp and a CRC-32 of its key and value. On restore the record now at that offset
is read back with a consumer of its own; a different record, or none where the log says there
should be one, means a different log, and the ingest treats it as an offset reset under its
policy (``on_offset_reset``). The check costs one small fetch per partition at assignment.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordMark:
    """What identifies one record of a partition: where it is and what it holds."""

    position: int  # the checkpoint's position: the record is at ``position - 1``
    timestamp: int  # Kafka timestamp, ms
    digest: int  # CRC-32 of key and value

    @property
    def offset(self) -> int:
        return self.position - 1


def digest(key: bytes | None, value: bytes | None) -> int:
    return zlib.crc32(value or b"", zlib.crc32(key or b""))


def mark_of(message) -> RecordMark:
    """The mark of a consumed record (``.offset .timestamp .key .value``)."""
    return RecordMark(message.offset + 1, int(message.timestamp or 0), digest(message.key, message.value))


async def read_marks(bootstrap: str, topic: str, offsets: dict[int, int],
                     timeout_s: float = 10.0, fetch_wait_ms: int = 100) -> dict[int, RecordMark | None]:
    """The mark of the record at each ``{partition: offset}`` as the log holds it now: None
    where the log skips that offset (the first record it returns lies after it). Left out, as
    unknown rather than different: offsets retention already deleted, offsets at or beyond the
    end (the ingest's offset check says those loudly), and partitions that did not answer
    within ``timeout_s``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import OffsetOutOfRangeError

    if not offsets:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="none", max_partition_fetch_bytes=1 << 16,
                                fetch_max_wait_ms=fetch_wait_ms)
    await consumer.start()
    found: dict[int, RecordMark | None] = {}
    try:
        wanted = {TopicPartition(topic, p): offset for p, offset in offsets.items()}
        starts = await consumer.beginning_offsets(list(wanted))
        wanted = {tp: offset for tp, offset in wanted.items() if offset >= starts[tp]}
        consumer.assign(list(wanted))
        for tp, offset in wanted.items():
            consumer.seek(tp, offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        open_tps = set(wanted)
        while open_tps and loop.time() < deadline:
            try:
                batches = await consumer.getmany(*open_tps, timeout_ms=200)
            except OffsetOutOfRangeError as exc:  # beyond the end: not ours to judge
                gone = set(exc.args[0]) if exc.args and isinstance(exc.args[0], dict) else set(open_tps)
                open_tps -= gone
                consumer.pause(*gone)
                continue
            for tp in list(open_tps):
                records = batches.get(tp)
                if records:
                    first = records[0]
                    found[tp.partition] = mark_of(first) if first.offset == wanted[tp] else None
                elif (high := consumer.highwater(tp)) is not None and high <= wanted[tp]:
                    pass  # the log ends before the record: the offset check says so
                else:
                    continue
                open_tps.discard(tp)
                consumer.pause(tp)
    finally:
        await consumer.stop()
    return found
