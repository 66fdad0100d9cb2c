"""What the parts of ``ClickIngest`` (recovery, the write lanes) share: its state, declared once
for the type checker, and ClickHouse calls retried (an outage slows the ingest, never loses a batch)."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from streams.core import metrics
from streams.core.config import Settings
from streams.core.storage import Storage, StorageError

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

log = logging.getLogger("streams.ingest.consumer")


class IngestPart:
    """The base of ``ClickIngest``'s mixins: the state they share, and ``_with_retry``."""

    settings: Settings
    storage: Storage
    topic: str
    consumer: "AIOKafkaConsumer"
    producer: "AIOKafkaProducer"
    _stopping: asyncio.Event

    async def _with_retry(self, call):
        """Retry ClickHouse calls with capped exponential back-off; never give up silently."""
        delay = 0.1
        while True:
            try:
                return await asyncio.to_thread(call)
            except StorageError as exc:
                metrics.CH_ERRORS.inc()
                if self._stopping.is_set():
                    raise
                log.warning("ClickHouse unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.settings.storage_retry_max_s)
