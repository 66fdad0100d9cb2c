"""``pairstream trainer``: the training job service of production mode (``training_mode=kafka``).

It consumes job messages from ``training-jobs`` (one at a time: a run takes hours on a GPU),
trains against the ClickHouse server, and publishes and announces a promotion; a message that
is not a job goes to ``training-jobs-dlq`` and the service keeps serving the ones that are.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streams.core import metrics
from streams.core.config import Settings
from streams.core.events import InvalidEvent
from streams.core.records import TrainingJob
from streams.core.storage import Storage
from streams.core.storage import runs as run_table
from streams.publishing.promotion import publish_with_own_producer
from streams.retraining.launcher import refresh_stats

log = logging.getLogger(__name__)


def run_trainer(settings: Settings, bootstrap: str, storage: Storage, config_for, once: bool = False) -> None:
    """``pairstream trainer``: consume ``training-jobs`` and run each job (production mode)."""
    from kafka import KafkaConsumer, KafkaProducer

    from streams.core.dead_letters import DeadLetter, send_sync
    from training import run

    dlq = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = KafkaConsumer(
        settings.topic_training_jobs, bootstrap_servers=bootstrap,
        group_id=f"{settings.app_id}-trainer", enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=int(settings.session_timeout_s * 1000),
        # a third of the session, as the ingest and Faust do (kafka-python's fixed 3 s default
        # refuses any session timeout up to 3 s)
        heartbeat_interval_ms=max(500, int(settings.session_timeout_s * 1000) // 3),
        max_poll_records=1, max_poll_interval_ms=6 * 3600 * 1000)
    try:
        while True:
            for message in (m for ms in consumer.poll(timeout_ms=1000).values() for m in ms):
                metrics.EVENTS_IN.labels(stage="training_jobs").inc()
                try:
                    job = TrainingJob.parse(message.value)
                except InvalidEvent as bad:  # not a job: dead-letter it, serve the ones that are
                    log.error("training-jobs %d:%d is not a job message (%s), dead-lettered: %r",
                              message.partition, message.offset, bad, (message.value or b"")[:200])
                    send_sync(dlq, settings.topic_training_jobs_dlq, [DeadLetter(
                        message.key, message.value, "bad_message", str(bad),
                        message.topic, message.partition, message.offset)])
                    consumer.commit()
                    continue
                started = time.time()
                run_id, trigger = job.run_id, job.trigger
                run_table.record(storage, run_id, trigger, "running", started)
                try:
                    config = config_for(job.args)  # validated before anything starts
                    refresh_stats(storage, settings)
                    result = run(storage, settings.data_dir, config)
                    if result.promoted:
                        asyncio.run(publish_with_own_producer(storage, settings, bootstrap, result.version))
                    run_table.record(storage, run_id, trigger, "succeeded", started, time.time(),
                                     result.version, result.promoted)
                except Exception as exc:  # noqa: BLE001 - recorded; the next window retries
                    log.exception("training job %s failed", run_id)
                    run_table.record(storage, run_id, trigger, "failed", started, time.time(), error=str(exc))
                consumer.commit()
                if once:
                    return
    finally:
        consumer.close()
        dlq.close()
