"""What follows a promotion, and its way back.

``publish_and_announce``: the promoted students score the candidate pairs into a new score
version, the Kafka outputs are produced, and a message on ``model-updates`` makes every worker
hot-reload. ``rollback`` (``pairstream models rollback``) serves an older score version again:

it points the live score version at the newest kept one of a model (or at a named
score version), marks that model promoted again in the registry, and tells the workers on
``model-updates`` so they reload it; without a broker they load it when they start."""

from __future__ import annotations

import asyncio
import time

from streams.core import metrics
from streams.core.config import Settings
from streams.core.records import MODEL_UPDATE_KEY, model_update_value
from streams.core.storage import Storage, registry, scores


async def announce(producer, settings: Settings, event: str, model_version: str, score_version: str | None) -> None:
    """``event`` (promoted, rollback) on ``model-updates``: every worker reloads ``score_version``."""
    await producer.send_and_wait(settings.topic_model_updates,
                                 model_update_value(event, model_version, score_version, time.time()),
                                 key=MODEL_UPDATE_KEY)


async def publish_and_announce(storage: Storage, settings: Settings, producer, model_version: str,
                               progress: bool = False) -> dict:
    """Publish the scores of ``model_version``, produce the Kafka outputs, tell every worker."""
    from models.runtime import Students
    from streams.publishing.publisher import emit, publish

    row = await asyncio.to_thread(registry.get, storage, model_version)
    if row is None:
        raise LookupError(f"model {model_version} is not in the registry")
    students = await asyncio.to_thread(Students, model_version, row["artifacts"], settings.onnx_threads)
    published = await asyncio.to_thread(publish, storage, settings, students, progress)
    summary = dict(published.summary)
    summary["kafka"] = await emit(producer, settings, published)
    await announce(producer, settings, "promoted", model_version, published.score_version)
    metrics.set_promoted(model_version)
    return summary


async def publish_with_own_producer(storage, settings, bootstrap, version) -> dict:
    """``publish_and_announce`` outside a worker (the CLI, the trainer service)."""
    from streams.core.produce import open_producer

    async with open_producer(bootstrap, linger_ms=5, max_batch_size=1 << 20) as producer:
        return await publish_and_announce(storage, settings, producer, version, progress=True)


def rollback(storage: Storage, version: str) -> dict:
    """Expose ``version`` (a model or score version) again; returns the score version now live."""
    target = scores.rollback_target(storage, version)
    scores.point_live(storage, target["score_version"], target["model_version"])
    registry.restore(storage, target["model_version"])
    return target


def announce_rollback(settings: Settings, target: dict) -> bool:
    """Tell the workers to reload; False where no broker is configured (embedded mode)."""
    if settings.embedded_kafka:
        return False

    async def send():
        from streams.core.produce import open_producer

        async with open_producer(settings.kafka_bootstrap) as producer:
            await announce(producer, settings, "rollback", target["model_version"], target["score_version"])

    asyncio.run(send())
    return True
