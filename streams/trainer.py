"""Training runs started by the stream, and what follows a promotion.

``TrainingLauncher`` (the leader worker's timer calls ``check`` every ``training_check_s``):
when ``streams.storage.runs.due`` says so it starts one run, the way ``training_mode`` says:

- ``subprocess`` (embedded): the tables the run reads are exported to the run's directory
  (``training.snapshot``: chDB serves one process), ``pairstream train-job`` trains in a child
  process, and the worker imports the registry rows it wrote;
- ``kafka`` (production): a job message on ``training-jobs``; ``pairstream trainer`` (the GPU
  service in docker-compose) runs it against the ClickHouse server (``run_trainer``).

Either way a promotion is followed by ``publish_and_announce``: the new students score the
candidate pairs into a new score version, the Kafka outputs are produced, and a message on
``model-updates`` makes every worker hot-reload (``ModelWatcher`` in ``streams.app``). Status,
duration and failure go to ``training_runs`` and the metrics; a failed run is retried in a
later window (``training_retry_s``), never in a loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import orjson

from streams import metrics
from streams.config import Settings
from streams.storage import Storage
from streams.storage import runs as run_table

log = logging.getLogger(__name__)


async def announce(producer, settings: Settings, event: dict) -> None:
    await producer.send_and_wait(settings.topic_model_updates, orjson.dumps(event), key=b"students")


async def publish_and_announce(storage: Storage, settings: Settings, producer, model_version: str,
                               progress: bool = False) -> dict:
    """Publish the scores of ``model_version``, produce the Kafka outputs, tell every worker."""
    from models.runtime import Students
    from streams.publish import emit, publish
    from training import registry

    row = await asyncio.to_thread(registry.get, storage, model_version)
    if row is None:
        raise LookupError(f"model {model_version} is not in the registry")
    students = await asyncio.to_thread(Students, model_version, row["artifacts"], settings.onnx_threads)
    published = await asyncio.to_thread(publish, storage, settings, students, progress)
    summary = dict(published.summary)
    summary["kafka"] = await emit(producer, settings, published)
    await announce(producer, settings, {"event": "promoted", "model_version": model_version,
                                        "score_version": published.score_version, "at": time.time()})
    metrics.set_promoted(model_version)
    return summary


class TrainingLauncher:
    """One run at a time from this worker (see the module docstring)."""

    def __init__(self, settings: Settings, storage: Storage, producer, python: str = sys.executable):
        self.settings = settings
        self.storage = storage
        self.producer = producer
        self.python = python
        self.task: asyncio.Task | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.last: dict | None = None  # the last finished run's outcome

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    async def check(self, now: float | None = None) -> str | None:
        """Start a run if one is due; returns its run id."""
        if self.busy:
            return None
        trigger = await asyncio.to_thread(run_table.due, self.storage, self.settings, now)
        return await self.launch(trigger) if trigger else None

    async def launch(self, trigger: str) -> str | None:
        if self.busy:
            return None
        run_id = run_table.new_run_id()
        started = time.time()
        if self.settings.training_mode == "kafka":
            await asyncio.to_thread(run_table.record, self.storage, run_id, trigger, "queued", started)
            await self.producer.send_and_wait(
                self.settings.topic_training_jobs, key=run_id.encode(),
                value=orjson.dumps({"run_id": run_id, "trigger": trigger, "at": started,
                                    "args": self.settings.training_args}))
            log.info("training run %s queued on %s (%s)", run_id, self.settings.topic_training_jobs, trigger)
            return run_id
        self.task = asyncio.ensure_future(self._embedded(run_id, trigger, started))
        return run_id

    async def wait(self) -> dict | None:
        if self.task is not None:
            await asyncio.shield(self.task)
        return self.last

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            try:  # reap it while the loop still runs: a zombie, or asyncio's warning, otherwise
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except asyncio.TimeoutError:
                log.warning("training child %s did not exit after SIGKILL", self.process.pid)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - recorded by the task
                pass

    async def _embedded(self, run_id: str, trigger: str, started: float) -> None:
        from training.snapshot import export_tables, import_tables

        st = self.storage
        outcome = {"run_id": run_id, "trigger": trigger, "status": "failed"}
        metrics.TRAINING_RUNNING.set(1)
        await asyncio.to_thread(run_table.record, st, run_id, trigger, "running", started)
        run_dir = Path(self.settings.data_dir) / "runs" / run_id
        log_path = run_dir / "train.log"
        try:
            await asyncio.to_thread(refresh_stats, st, self.settings)  # behaviour labels read them
            await asyncio.to_thread(export_tables, st, run_dir / "snapshot")
            with open(log_path, "wb") as log_file:
                self.process = await asyncio.create_subprocess_exec(
                    self.python, "-m", "streams.cli", "train-job", "--run-dir", str(run_dir),
                    "--data-dir", self.settings.data_dir, *shlex.split(self.settings.training_args),
                    stdout=log_file, stderr=asyncio.subprocess.STDOUT)
                code = await self.process.wait()
            if code != 0:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"train-job exited with {code}: {tail}")
            result = json.loads((run_dir / "result.json").read_text())
            version = result["version"]
            await asyncio.to_thread(
                import_tables, st, run_dir / "registry", ("models",),
                lambda _name, table: table.filter(_versions_mask(table, version, result)))
            outcome.update(status="succeeded", model_version=version,
                           promoted=bool(result["decision"]["promoted"]), report=result.get("report"),
                           metrics=result.get("metrics"))
            if outcome["promoted"]:
                outcome["publish"] = await publish_and_announce(st, self.settings, self.producer, version)
            await asyncio.to_thread(run_table.record, st, run_id, trigger, "succeeded", started,
                                    time.time(), version, outcome["promoted"])
        except asyncio.CancelledError:
            await asyncio.to_thread(run_table.record, st, run_id, trigger, "failed", started,
                                    time.time(), error="cancelled: the worker stopped")
            raise
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not raised
            log.error("training run %s failed: %s", run_id, exc)
            outcome["error"] = str(exc)
            await asyncio.to_thread(run_table.record, st, run_id, trigger, "failed", started,
                                    time.time(), error=str(exc))
        finally:
            self.process = None
            metrics.TRAINING_RUNNING.set(0)
            metrics.TRAINING_RUNS.labels(status=outcome["status"]).inc()
            metrics.TRAINING_SECONDS.observe(time.time() - started)
            outcome["seconds"] = round(time.time() - started, 1)
            self.last = outcome


def _versions_mask(table, version: str, result: dict):
    """Registry rows the run wrote: its own, and the incumbent it retired."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = [version]
    if result["decision"].get("promoted") and result["decision"].get("incumbent_version"):
        wanted.append(result["decision"]["incumbent_version"])
    return pc.is_in(table.column("version"), value_set=pa.array(wanted))


def train_job(run_dir: str | Path, data_dir: str, config) -> dict:
    """The child process of an embedded run (``pairstream train-job``): import the snapshot
    into a private chDB, train, export the registry rows and the result."""
    from streams.storage.chdb_client import ChdbStorage
    from streams.storage.migrations import migrate
    from training import run
    from training.snapshot import export_tables, import_tables

    run_dir = Path(run_dir)
    storage = ChdbStorage(run_dir / "chdb", "pairstream")
    try:
        migrate(storage)
        import_tables(storage, run_dir / "snapshot")
        result = run(storage, data_dir, config)
        export_tables(storage, run_dir / "registry", ("models",))
    finally:
        storage.close()
    (run_dir / "result.json").write_text(json.dumps(result, default=str))
    return result


def refresh_stats(storage: Storage, settings: Settings) -> int | None:
    """A new ``pair_stats`` version before a run: its behaviour labels are read from it."""
    from streams.storage import stats

    return stats.refresh(storage, stats.StatsParams.from_settings(settings))


def run_trainer(settings: Settings, bootstrap: str, storage: Storage, config_for, once: bool = False) -> None:
    """``pairstream trainer``: consume ``training-jobs`` and run each job (production mode)."""
    from kafka import KafkaConsumer, KafkaProducer

    from streams.dead_letters import DeadLetter, send_sync
    from training import run

    dlq = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = KafkaConsumer(
        settings.topic_training_jobs, bootstrap_servers=bootstrap,
        group_id=f"{settings.app_id}-trainer", enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=int(settings.session_timeout_s * 1000),
        max_poll_records=1, max_poll_interval_ms=6 * 3600 * 1000)
    try:
        while True:
            for message in (m for ms in consumer.poll(timeout_ms=1000).values() for m in ms):
                metrics.EVENTS_IN.labels(stage="training_jobs").inc()
                job = _parse_job(message.value)
                if job is None:  # not a job: dead-letter it and keep serving the ones that are
                    log.error("training-jobs %d:%d is not a job message, dead-lettered: %r",
                              message.partition, message.offset, (message.value or b"")[:200])
                    send_sync(dlq, settings.topic_training_jobs_dlq, [DeadLetter(
                        message.key, message.value, "bad_message",
                        'a job is a JSON object {"run_id": "...", "args": "..."}',
                        message.topic, message.partition, message.offset)])
                    consumer.commit()
                    continue
                started = time.time()
                run_id, trigger = job["run_id"], str(job.get("trigger", "kafka"))
                run_table.record(storage, run_id, trigger, "running", started)
                try:
                    config = config_for(job.get("args", ""))  # validated before anything starts
                    refresh_stats(storage, settings)
                    result = run(storage, settings.data_dir, config)
                    promoted = bool(result["decision"]["promoted"])
                    if promoted:
                        asyncio.run(publish_with_own_producer(storage, settings, bootstrap, result["version"]))
                    run_table.record(storage, run_id, trigger, "succeeded", started, time.time(),
                                     result["version"], promoted)
                except Exception as exc:  # noqa: BLE001 - recorded; the next window retries
                    log.exception("training job %s failed", run_id)
                    run_table.record(storage, run_id, trigger, "failed", started, time.time(), error=str(exc))
                consumer.commit()
                if once:
                    return
    finally:
        consumer.close()
        dlq.close()


def _parse_job(value: bytes) -> dict | None:
    """A job message: a JSON object with a string ``run_id`` (``args`` a string if present)."""
    if not value:  # a tombstone
        return None
    try:
        job = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(job, dict) or not isinstance(job.get("run_id"), str) or not job["run_id"]:
        return None
    if not isinstance(job.get("args", ""), str):
        return None
    return job


async def publish_with_own_producer(storage, settings, bootstrap, version) -> dict:
    """``publish_and_announce`` outside a worker (the CLI, the trainer service)."""
    from streams.produce import open_producer

    async with open_producer(bootstrap, linger_ms=5, max_batch_size=1 << 20) as producer:
        return await publish_and_announce(storage, settings, producer, version, progress=True)
