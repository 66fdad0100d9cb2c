"""Training runs started by the stream, and what follows a promotion.

``TrainingLauncher`` (the leader worker's timer calls ``check`` every ``training_check_s``):
when ``streams.retraining.trigger.due`` says so it starts one run, the way ``training_mode`` says:

- ``subprocess`` (embedded): the tables the run reads are exported to the run's directory
  (``streams.core.storage.snapshot``: chDB serves one process), ``pairstream train-job`` trains in a child
  process, and the worker imports the registry rows it wrote;
- ``kafka`` (production): a job message on ``training-jobs``; ``pairstream trainer`` (the GPU
  service in docker-compose) runs it against the ClickHouse server (``streams.retraining.trainer_service``).

Either way a promotion is followed by ``streams.publishing.promotion.publish_and_announce``: the new students score the
candidate pairs into a new score version, the Kafka outputs are produced, and a message on
``model-updates`` makes every worker hot-reload (``ModelWatcher`` in ``streams.app``). Status,
duration and failure go to ``training_runs`` and the metrics; a failed run is retried in a
later window (``training_retry_s``), never in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from streams.core import metrics
from streams.core.config import Settings
from streams.core.lifeline import child_environment, lower_priority, training_threads
from streams.core.records import TrainingJob
from streams.core.storage import Storage, registry
from streams.core.storage import runs as run_table
from streams.publishing.promotion import publish_and_announce
from streams.retraining import trigger as trigger_policy
from training import RunResult

log = logging.getLogger(__name__)


class TrainingLauncher:
    """One run at a time from this worker (see the module docstring)."""

    def __init__(self, settings: Settings, storage: Storage, producer, python: str = sys.executable,
                 publish_lock: asyncio.Lock | None = None):
        self.settings = settings
        self.publish_lock = publish_lock or asyncio.Lock()  # shared with the score refresher
        self.storage = storage
        self.producer = producer
        self.python = python
        self.task: asyncio.Task | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.last: dict | None = None  # the last finished run's outcome
        self.stopping = False  # set by stop(): a child killed then is a cancellation, not a failure
        self._reaped = False  # runs left 'running' by a killed worker: see reap_abandoned

    async def reap_abandoned(self) -> list[str]:
        """Runs a previous process of this worker left 'running': its child ended with it
        (``streams.core.lifeline``), so no one will finish them. Marked abandoned, so the next
        run starts when due instead of after ``training_timeout_s``. Only runs of this data
        directory that no live process is training (another worker's run is not ours to end)."""
        if self.settings.training_mode == "kafka":
            return []
        runs_dir = Path(self.settings.data_dir) / "runs"
        stale = [run for run in await asyncio.to_thread(run_table.running, self.storage)
                 if (runs_dir / run["run_id"]).is_dir() and not _trained_now(runs_dir / run["run_id"])]
        for run in stale:
            log.warning("training run %s was left running by a worker that stopped without finishing it: "
                        "marked abandoned", run["run_id"])
            await asyncio.to_thread(run_table.record, self.storage, run["run_id"], run["trigger"],
                                    run_table.ABANDONED, run["started_at"], time.time(),
                                    error="abandoned: its worker stopped without finishing it")
        return [run["run_id"] for run in stale]

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    async def check(self, now: float | None = None) -> str | None:
        """Start a run if one is due; returns its run id. Raises what the trigger's reads raise
        (``tick`` is the timer's guarded call). The first check reaps abandoned runs."""
        if not self._reaped:
            await self.reap_abandoned()
            self._reaped = True
        if self.busy:
            metrics.TRAINING_CHECKS.labels(outcome="busy").inc()
            return None
        trigger = await asyncio.to_thread(trigger_policy.due, self.storage, self.settings, now)
        run_id = await self.launch(trigger) if trigger else None
        metrics.TRAINING_CHECKS.labels(outcome="started" if run_id else "not_due").inc()
        return run_id

    async def tick(self) -> str | None:
        """The leader's timer: ``check``, and a check that fails (ClickHouse unreachable, the
        broker gone) is logged and counted, never raised: Faust stops the whole worker on an
        exception from a timer, and the next tick tries again."""
        try:
            return await self.check()
        except Exception:  # noqa: BLE001 - logged with its traceback; a test of the worker fails on it
            metrics.TRAINING_CHECKS.labels(outcome="error").inc()
            log.exception("training check failed; the next check in %.0fs tries again",
                          self.settings.training_check_s)
            return None

    async def launch(self, trigger: str) -> str | None:
        if self.busy:
            return None
        run_id = run_table.new_run_id()
        started = time.time()
        first = await asyncio.to_thread(registry.promoted, self.storage) is None
        args = (self.settings.training_first_args or self.settings.training_args) if first \
            else self.settings.training_args
        if first:
            log.info("no promoted model yet: a fast first run (%s)", args)
        if self.settings.training_mode == "kafka":
            await asyncio.to_thread(run_table.record, self.storage, run_id, trigger, "queued", started)
            await self.producer.send_and_wait(
                self.settings.topic_training_jobs, key=run_id.encode(),
                value=TrainingJob(run_id, args, trigger, started).to_json())
            log.info("training run %s queued on %s (%s)", run_id, self.settings.topic_training_jobs, trigger)
            return run_id
        self.task = asyncio.ensure_future(self._embedded(run_id, trigger, started, args, first))
        return run_id

    async def wait(self) -> dict | None:
        if self.task is not None:
            await asyncio.shield(self.task)
        return self.last

    async def stop(self) -> None:
        """Stop a run in flight (the worker is stopping): the child is killed and the run is
        recorded as cancelled, which is no error."""
        self.stopping = True
        process = self.process
        killed = process is not None and process.returncode is None
        if process is not None and killed:
            process.kill()
            try:  # reap it while the loop still runs: a zombie, or asyncio's warning, otherwise
                await asyncio.wait_for(process.wait(), timeout=10)
            except asyncio.TimeoutError:
                log.warning("training child %s did not exit after SIGKILL", process.pid)
        if self.task is not None and not self.task.done():
            if killed:  # a killed child ends the run by itself, which records why
                await asyncio.wait({self.task}, timeout=10)
            if not self.task.done():  # snapshotting or publishing: cancelled where it stands
                self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - recorded by the task
                pass

    async def _embedded(self, run_id: str, trigger: str, started: float, args: str, first: bool) -> None:
        from streams.core.storage.snapshot import export_tables, import_tables

        st = self.storage
        outcome: dict[str, Any] = {"run_id": run_id, "trigger": trigger, "status": "failed"}
        metrics.TRAINING_RUNNING.set(1)
        await asyncio.to_thread(run_table.record, st, run_id, trigger, "running", started)
        run_dir = Path(self.settings.data_dir) / "runs" / run_id
        log_path = run_dir / "train.log"
        try:
            await asyncio.to_thread(refresh_stats, st, self.settings)  # behaviour labels read them
            await asyncio.to_thread(export_tables, st, run_dir / "snapshot")
            with open(log_path, "wb") as log_file:
                # it ends with the worker (``lifeline``), and its thread pools leave the worker a
                # core and wait passively instead of spinning against it
                threads = training_threads(self.settings.training_threads)
                self.process = await asyncio.create_subprocess_exec(
                    self.python, "-m", "streams.cli", "train-job", "--run-dir", str(run_dir),
                    "--data-dir", self.settings.data_dir, "--parent-pid", str(os.getpid()), *shlex.split(args),
                    stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                    env={**os.environ, **child_environment(threads)},
                    preexec_fn=lower_priority(self.settings.training_nice))
                code = await self.process.wait()
            if code != 0 and self.stopping:
                raise asyncio.CancelledError  # killed by stop(): recorded as cancelled below
            if code != 0:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"train-job exited with {code}: {tail}")
            result = RunResult.read(run_dir / "result.json")
            version = result.version
            if version is None:
                raise RuntimeError(f"train-job wrote a result without a model version: {run_dir / 'result.json'}")
            await asyncio.to_thread(
                import_tables, st, run_dir / "registry", ("models",),
                lambda _name, table: table.filter(_versions_mask(table, version, result)))
            outcome.update(status="succeeded", model_version=version,
                           promoted=result.promoted, report=result.report,
                           metrics=result.metrics)
            if result.promoted:
                settings = self.settings.replace(publish_cross_budget_s=min(
                    self.settings.publish_cross_budget_s, self.settings.publish_first_cross_budget_s)) \
                    if first else self.settings
                async with self.publish_lock:
                    outcome["publish"] = await publish_and_announce(st, settings, self.producer, version)
            await asyncio.to_thread(run_table.record, st, run_id, trigger, "succeeded", started,
                                    time.time(), version, result.promoted)
            log.info("training run %s succeeded in %.0f s: model %s %s", run_id, time.time() - started, version,
                     "promoted and published" if result.promoted else "kept as a candidate (the gate said no)")
        except asyncio.CancelledError:
            log.info("training run %s cancelled: the worker is stopping", run_id)
            outcome.update(status="cancelled", error="cancelled: the worker stopped")  # not a failure
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


def _trained_now(run_dir: Path) -> bool:
    """Whether a live process is a ``train-job`` of ``run_dir`` (Linux: ``/proc``; elsewhere
    the answer is yes, so nothing is reaped that might still run)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    wanted = str(run_dir).encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"train-job" in argv and wanted in argv and state != "Z":
            return True
    return False


def _versions_mask(table, version: str, result: RunResult):
    """Registry rows the run wrote: its own, and the incumbent it retired."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = [version]
    if result.incumbent_version:
        wanted.append(result.incumbent_version)
    return pc.is_in(table.column("version"), value_set=pa.array(wanted))


def train_job(run_dir: str | Path, data_dir: str, config) -> RunResult:
    """The child process of an embedded run (``pairstream train-job``): import the snapshot
    into a private chDB, train, export the registry rows and the result."""
    from streams.core.storage.chdb_client import ChdbStorage
    from streams.core.storage.migrations import migrate
    from streams.core.storage.snapshot import export_tables, import_tables
    from training import run

    run_dir = Path(run_dir)
    storage = ChdbStorage(run_dir / "chdb", "pairstream")
    try:
        migrate(storage)
        import_tables(storage, run_dir / "snapshot")
        result = run(storage, data_dir, config)
        export_tables(storage, run_dir / "registry", ("models",))
    finally:
        storage.close()
    (run_dir / "result.json").write_text(result.to_json())
    return result


def refresh_stats(storage: Storage, settings: Settings) -> int | None:
    """A new ``pair_stats`` version before a run: its behaviour labels are read from it."""
    from streams.core.storage import stats

    return stats.refresh(storage, stats.StatsParams.from_settings(settings))
