"""Hot reload: every worker follows ``model-updates`` and swaps its students and index.

Not a Faust agent: an agent's topic is shared by the consumer group, so only one worker would
see each message, and every worker must reload. Each worker reads the (single-partition) topic
with its own group-less consumer from the end; at start it loads the live version from
ClickHouse, so it needs no history of the topic.
"""

from __future__ import annotations

import logging

import orjson

from . import metrics
from .storage import scores

log = logging.getLogger(__name__)


class ModelWatcher:
    def __init__(self, bootstrap: str, topic: str, serving):
        self.bootstrap = bootstrap
        self.topic = topic
        self.serving = serving
        self.seen = 0
        self._consumer = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                          enable_auto_commit=False)
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            await self._consumer.topics()  # a metadata request for every topic
            partitions = self._consumer.partitions_for_topic(self.topic) or {0}
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)

    async def run(self) -> None:
        """Follow the topic until :meth:`stop` (which ends a pending ``getmany``)."""
        from aiokafka.errors import ConsumerStoppedError

        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except ConsumerStoppedError:
                return
            for messages in batches.values():
                metrics.EVENTS_IN.labels(stage="model_updates").inc(len(messages))
                for message in messages:
                    await self.handle(message.value)

    async def handle(self, value: bytes | None) -> bool:
        """Reload to the announced score version; False (logged, counted as ``rejected``)
        for a tombstone, malformed JSON or a version that was never published, so the
        current snapshot keeps serving instead of an empty index."""
        score_version = self.validated(value)
        if score_version is False:
            metrics.MODEL_RELOADS.labels(outcome="rejected").inc()
            return False
        self.seen += 1
        try:
            await self.serving.reload(score_version)
        except Exception:  # noqa: BLE001 - keep serving the old snapshot
            log.exception("hot reload to %s failed; still serving %s", score_version,
                          self.serving.current.index.score_version)
            return False
        return True

    def validated(self, value: bytes | None):
        """The message's score version (None: "whatever is live"), or False if unusable."""
        if not value:
            log.warning("ignored an empty (tombstone) model update")
            return False
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.warning("ignored a malformed model update: %r", value[:200])
            return False
        if not isinstance(event, dict):
            log.warning("ignored a model update that is not an object: %r", value[:200])
            return False
        score_version = event.get("score_version")
        if score_version is None:
            return None
        if not isinstance(score_version, str) or not scores.is_version(score_version):
            log.warning("ignored a model update with a malformed score version: %r", score_version)
            return False
        if not scores.published(self.serving.storage, score_version):
            log.warning("ignored a model update naming unknown score version %r", score_version)
            return False
        return score_version

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
