"""Hot reload: every worker follows ``model-updates`` and swaps its students and index.

Not a Faust agent: an agent's topic is shared by the consumer group, so only one worker would
see each message, and every worker must reload. Each worker reads the (single-partition) topic
with its own group-less consumer from the end; at start it loads the live version from
ClickHouse, so it needs no history of the topic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from streams.core import metrics
from streams.core.events import InvalidEvent
from streams.core.records import model_update_event, parse_model_update
from streams.core.storage import StorageError, scores

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)


class ModelWatcher:
    """``dead_letter(message, reason, detail)`` (async, optional) receives each rejected
    message: every worker reads the whole topic, so each worker dead-letters what it rejects."""

    def __init__(self, bootstrap: str, topic: str, serving, dead_letter=None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.serving = serving
        self.dead_letter = dead_letter
        self.seen = 0
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        consumer = self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                                     enable_auto_commit=False)
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer.topics()  # a metadata request for every topic
            partitions = consumer.partitions_for_topic(self.topic) or {0}
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)

    async def run(self) -> None:
        """Follow the topic until :meth:`stop` (which ends a pending ``getmany``)."""
        from aiokafka.errors import ConsumerStoppedError

        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("ModelWatcher.run before start")
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except ConsumerStoppedError:
                return
            for messages in batches.values():
                metrics.EVENTS_IN.labels(stage="model_updates").inc(len(messages))
                for message in messages:
                    await self.handle(message.value, message)

    async def handle(self, value: bytes | None, message=None) -> bool:
        """Reload to the announced score version (apply its new updates, for ``refreshed``);
        False (logged, counted as ``rejected``, dead-lettered) for a tombstone, malformed JSON
        or a version that was never published, so the current snapshot keeps serving instead of an empty index."""
        try:
            score_version = await asyncio.to_thread(self.check, value)
        except StorageError as exc:  # ClickHouse unreachable: keep serving, skip this message
            log.error("could not check a model update against ClickHouse (%s); still serving %s",
                      exc, self.serving.current.index.score_version)
            metrics.MODEL_RELOADS.labels(outcome="failed").inc()
            return False
        except InvalidEvent as bad:
            log.warning("ignored a model update (%s): %s", bad.reason, bad.detail)
            metrics.MODEL_RELOADS.labels(outcome="rejected").inc()
            if self.dead_letter is not None and message is not None:
                await self.dead_letter(message, bad.reason, bad.detail)
            return False
        self.seen += 1
        try:
            if score_version is not None and model_update_event(value) == "refreshed":
                await self.serving.apply_updates(score_version)
                return True
            await self.serving.reload(score_version)
        except Exception:  # noqa: BLE001 - keep serving the old snapshot
            log.exception("hot reload to %s failed; still serving %s", score_version,
                          self.serving.current.index.score_version)
            return False
        return True

    def check(self, value: bytes | None) -> str | None:
        """The message's score version (None: "whatever is live"); ``InvalidEvent`` if unusable."""
        score_version = parse_model_update(value, scores.is_version)
        if score_version is None:
            return None
        if not scores.published(self.serving.storage, score_version):
            raise InvalidEvent("unknown_version", f"score version {score_version!r} was never published "
                                                  "in full (unknown, or still being written)")
        return score_version

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
