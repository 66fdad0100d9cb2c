"""Hot reload: every worker follows ``model-updates`` and swaps its students and index.

Not a Faust agent: an agent's topic is shared by the consumer group, so only one worker would
see each message, and every worker must reload. Each worker reads the (single-partition) topic
with its own group-less consumer from the end; at start it loads the live version from
ClickHouse, so it needs no history of the topic.
"""

from __future__ import annotations

import logging

import orjson

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
            await self._consumer._client.force_metadata_update()
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
                for message in messages:
                    await self.handle(message.value)

    async def handle(self, value: bytes) -> None:
        try:
            event = orjson.loads(value)
            score_version = event.get("score_version")
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("ignored a malformed model update: %r", value[:200])
            return
        self.seen += 1
        try:
            await self.serving.reload(score_version)
        except Exception:  # noqa: BLE001 - keep serving the old snapshot
            log.exception("hot reload to %s failed; still serving %s", score_version,
                          self.serving.current.index.score_version)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
