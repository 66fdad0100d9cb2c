"""Every worker's pairing catalogue follows the whole ``items`` topic, and clicks wait for it.

Why: pairing counts a click only with items its catalogue knows, and that catalogue was fed by
the ``catalogue`` agent, which (a Faust agent in the app's consumer group) reads only the
``items`` partitions assigned to its worker and runs about a second behind the topic. So a
fresh worker fed items and clicks at once read all 20,000 clicks before the 600 items landed
and counted nothing, and with several workers each one knew only its share of the items.

Now the agent writes the ``items`` table (and the dead letters), and each worker's ingest runs a
follower: a group-less consumer of every ``items`` partition from the start of the compacted
topic, applying items to the in-memory catalogue in order. The click ingest holds a fetch of
clicks until the follower has read everything appended before those clicks were created (their
Kafka timestamps, capped at the time they were fetched, so a producer's fast clock cannot hold
the stream), at most ``catalogue_wait_s``: a stream-table join aligned on Kafka time. In steady
state that costs one follower poll (tens of milliseconds) for the newest clicks, nothing for
older ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from streams.core import metrics
from streams.ingest.catalogue import Catalogue

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)

POLL_MS = 30  # an empty poll this long means every record appended before it was applied


class CatalogueFollower:
    """Reads the whole ``items`` topic into ``catalogue``; ``wait_for`` is the clicks' barrier."""

    def __init__(self, bootstrap: str, topic: str, catalogue: Catalogue, max_bytes: int = 65536,
                 max_wait_s: float = 30.0, fetch_wait_ms: int = POLL_MS // 2):
        self.bootstrap = bootstrap
        self.fetch_wait_ms = fetch_wait_ms
        self.topic = topic
        self.catalogue = catalogue
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_s
        self.synced_at = 0.0  # every item appended before this wall time is in the catalogue
        self.applied = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._synced = asyncio.Event()  # set at each sync, for ``wait_for``
        self._stopping = False

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=self.fetch_wait_ms)
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer.topics()  # a metadata refresh that names every topic
            partitions = consumer.partitions_for_topic(self.topic) or set()
        if not partitions:  # no items topic: nothing to follow, and nothing to wait for
            log.warning("items follower: topic %s has no partitions; clicks will not wait for it", self.topic)
            self.synced_at = float("inf")
            return
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()

    async def run(self) -> None:
        """Apply the topic in order until ``stop``; each empty poll marks a sync."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("CatalogueFollower.start() has not run")
        if not consumer.assignment():
            return  # nothing to follow (``start`` said so)
        while not self._stopping:
            started = time.time()
            try:
                batches = await consumer.getmany(timeout_ms=POLL_MS)
            except Exception as exc:  # noqa: BLE001 - the broker restarting: keep following
                if self._stopping:
                    break
                log.warning("items follower: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if batches:
                for records in batches.values():
                    self.catalogue.follow([(r.key, r.value) for r in records], self.max_bytes)
                    self.applied += len(records)
                continue
            self.synced_at = started
            self._synced.set()
            self._synced = asyncio.Event()

    async def stop(self) -> None:
        self._stopping = True
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_for(self, created_ms: float, fetched_at: float) -> None:
        """Return once every item appended before the clicks were created (``created_ms``,
        their newest Kafka timestamp, capped at ``fetched_at``) is in the catalogue, or after
        ``max_wait_s`` (counted: ``pairstream_catalogue_waits_total{outcome="timeout"}``)."""
        needed = min(created_ms / 1000.0, fetched_at)
        if self.synced_at >= needed:
            return
        deadline = time.monotonic() + self.max_wait_s
        while self.synced_at < needed:
            left = deadline - time.monotonic()
            if left <= 0:
                metrics.CATALOGUE_WAITS.labels(outcome="timeout").inc()
                log.warning("clicks waited %.0f s for the items follower; pairing them with the "
                            "catalogue as it stands", self.max_wait_s)
                return
            try:
                await asyncio.wait_for(self._synced.wait(), left)
            except asyncio.TimeoutError:
                pass
        metrics.CATALOGUE_WAITS.labels(outcome="synced").inc()
