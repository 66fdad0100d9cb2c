"""How the ingest reads Kafka with aiokafka: the consumer options, and what it changes.

Why: the ingest's event loop both reads (aiokafka parses fetches on it) and pairs, 100-500k
records a second on one thread. With aiokafka's defaults three things cost it a third to a
half of its rate (measured by ``pairstream bench ingest``; see docs/ingest.md "How the ingest is
exact and fast"):

1. ``ConsumerRecord``: each parsed record (a C object with ``.offset .timestamp .key
   .value``) is wrapped in an 11-field dataclass with sizes and a headers tuple, about a third
   of a raw read's CPU. The ingest reads only those four attributes and knows each batch's
   topic-partition from ``getmany``'s keys. aiokafka has no option for this, so ``install``
   overrides ``PartitionRecords._consumer_record`` once per process for consumers whose value
   deserializer is ``PARSED_RECORDS`` (an identity function) only: every other consumer in
   the process (Faust's) gets ``ConsumerRecord``s as before. If a future aiokafka moves that
   method, ``install`` returns False and the ingest reads ``ConsumerRecord``s, which have the
   same four attributes.
2. Fetch stalls: a node is not asked for more while any of its partitions has records
   younger than ``prefetch_backoff`` (0.1 s) waiting, and a fetch for partitions already read
   to their end waits ``fetch_max_wait_ms`` (0.5 s) on the broker, holding up the next fetch
   for the partitions that still have data. ``tune`` sets the former to 0 (the ingest drains
   what it is given every loop turn); the options set the latter to 50 ms.
3. Loop turns: a fetch response (up to 8 MB from the embedded broker) is read 256 KB per turn
   of the event loop, and ``getmany`` returns without a turn while records are buffered, so
   the next response arrived only when the buffer ran dry. The consume loop yields
   ``LOOP_TURNS_PER_FETCH`` turns after each fetch so the socket reads go on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 50
LOOP_TURNS_PER_FETCH = 16

_MARK = "_pairstream_parsed_records"
_lock = threading.Lock()


def PARSED_RECORDS(value):  # noqa: N802 - a marker compared by identity, named like a constant
    """Value deserializer that asks for aiokafka's parsed records, unwrapped."""
    return value


def consumer_options(fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS) -> dict:
    """``AIOKafkaConsumer`` keyword arguments for reading at the ingest's rate (a longer fetch
    wait where the broker needs one: ``Settings.fetch_wait_ms``)."""
    options: dict[str, object] = {
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 16 * 1024 * 1024,
        "fetch_max_wait_ms": fetch_max_wait_ms,
    }
    if install():
        options["value_deserializer"] = PARSED_RECORDS
    return options


def tune(consumer) -> None:
    """After ``consumer.start()``: fetch a partition as soon as it is drained, whatever the
    others still hold (aiokafka's ``prefetch_backoff``, not a constructor argument)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None and hasattr(fetcher, "_prefetch_backoff"):
        fetcher._prefetch_backoff = 0.0  # noqa: SLF001 - no public setting (see docstring)
    else:
        log.info("aiokafka's fetcher has no prefetch backoff to tune")


async def let_reads_run() -> None:
    """Turn the event loop ``LOOP_TURNS_PER_FETCH`` times, after a fetch is processed, so the
    socket read of the next fetch response goes on (point 3 above)."""
    for _ in range(LOOP_TURNS_PER_FETCH):
        await asyncio.sleep(0)


def install() -> bool:
    """Let consumers built with ``value_deserializer=PARSED_RECORDS`` receive parsed records.
    Idempotent; False (and a log line) when this aiokafka has no such hook."""
    from aiokafka.consumer import fetcher

    cls = getattr(fetcher, "PartitionRecords", None)
    wrap = getattr(cls, "_consumer_record", None)
    if cls is None or wrap is None:
        log.info("aiokafka has no PartitionRecords._consumer_record: the ingest reads ConsumerRecords")
        return False
    with _lock:
        if getattr(cls, _MARK, False):
            return True

        def _consumer_record(self, tp, record, _wrap=wrap):
            if self._value_deserializer is PARSED_RECORDS:
                return record
            return _wrap(self, tp, record)

        cls._consumer_record = _consumer_record
        setattr(cls, _MARK, True)
    return True
