"""The training trigger: thresholds, one run at a time, a failed run waits for the next window;
the timer's path through the launcher; the trainer service's bad jobs. A triggered run that
trains, promotes, publishes, announces and hot-reloads is ``tests/streams/test_worker.py``: the
worker's own timer starts it there."""

from __future__ import annotations

import asyncio
import time

from streams.core.produce import open_producer
from streams.core.storage import runs as run_table
from streams.core.storage.labels import LabelRow, write_labels
from streams.core.topics import ensure_topics
from streams.retraining import trigger as trigger_policy
from streams.retraining.launcher import TrainingLauncher
from tests.kafka import produce


def _labels(storage, n, start=0, at=None):
    write_labels(storage, [LabelRow(f"a{i:04d}", f"b{i:04d}", 5.0, "medium", "llm", "heuristic", "h", "v",
                                    labelled_at=at or time.time()) for i in range(start, start + n)])


def test_trigger_rules(storage, settings):
    s = settings.replace(training_min_new_labels=5, training_interval_s=3600, training_retry_s=600,
                         training_timeout_s=7200, training_min_labels=4)
    now = time.time()
    assert trigger_policy.due(storage, s, now) is None  # nothing to learn from
    _labels(storage, 3, at=now - 10)
    assert trigger_policy.due(storage, s, now) is None  # too few in all to train on: no run yet
    _labels(storage, 1, start=3, at=now - 10)
    assert trigger_policy.due(storage, s, now) == "schedule"  # never trained, some labels
    run_table.record(storage, "r1", "schedule", "succeeded", now - 5, now - 1, "v1", True)
    assert trigger_policy.due(storage, s, now) is None  # labels are older than the last run
    _labels(storage, 4, start=10)
    assert trigger_policy.due(storage, s, now) is None  # 4 new < 5, schedule not yet due
    assert trigger_policy.due(storage, s, now + 3600) == "schedule"
    _labels(storage, 1, start=20)
    assert trigger_policy.due(storage, s, now) == "labels"
    run_table.record(storage, "r2", "labels", "running", now)
    assert trigger_policy.due(storage, s, now + 60) is None  # one at a time
    assert trigger_policy.due(storage, s, now + 7201) == "labels"  # a run that never ended is dead
    run_table.record(storage, "r2", "labels", "failed", now, now + 30, error="boom")
    assert trigger_policy.due(storage, s, now + 60) is None  # the failure waits for the next window
    assert trigger_policy.due(storage, s, now + 631) == "labels"


def _launch(storage, settings, broker, trigger="test"):
    async def go():
        async with open_producer(broker.bootstrap, max_batch_size=1 << 20) as producer:
            launcher = TrainingLauncher(settings, storage, producer)
            run_id = await launcher.launch(trigger)
            assert await launcher.launch(trigger) is None  # one at a time
            return run_id, await launcher.wait()

    return asyncio.run(go())


def test_failed_run_is_recorded_and_not_retried_at_once(storage, settings, broker):
    _labels(storage, 3)  # too few to train: the child process fails
    s = settings.replace(training_min_new_labels=1, training_retry_s=600, training_min_labels=1)
    run_id, outcome = _launch(storage, s, broker)
    assert outcome["status"] == "failed" and "too few labels" in outcome["error"]
    [row] = run_table.runs(storage)
    assert row["run_id"] == run_id and row["status"] == "failed" and "too few labels" in row["error"]
    assert trigger_policy.due(storage, s) is None
    assert trigger_policy.due(storage, s, time.time() + 601) == "labels"


def test_the_timer_path_check_starts_a_due_run_and_then_waits(storage, settings, broker):
    """What the worker's ``training_trigger`` timer calls: ``TrainingLauncher.check``. It once
    called a function the package move had taken elsewhere and crashed the worker 30 s after start."""
    _labels(storage, 3)  # due by labels; too few to train, so the child fails fast
    s = settings.replace(training_min_new_labels=1, training_retry_s=600, training_min_labels=1)

    async def go():
        async with open_producer(broker.bootstrap) as producer:
            launcher = TrainingLauncher(s, storage, producer)
            first = await launcher.check()
            assert await launcher.check() is None  # one at a time while it runs
            outcome = await launcher.wait()
            return first, outcome, await launcher.check()

    run_id, outcome, after_failure = asyncio.run(go())
    assert run_id is not None and outcome["run_id"] == run_id and outcome["trigger"] == "labels"
    assert outcome["status"] == "failed" and "too few labels" in outcome["error"]
    assert after_failure is None  # the failure waits for training_retry_s, never a loop


def test_a_run_stopped_with_the_worker_is_cancelled_not_failed(storage, settings, broker, caplog):
    """A worker stopping kills its training child: that is a cancellation (no ERROR line, not
    counted as a failure that an alert would page on), recorded with its reason."""
    import logging

    from streams.core import metrics

    _labels(storage, 3)
    failed_before = metrics.TRAINING_RUNS.labels(status="failed")._value.get()

    async def go():
        async with open_producer(broker.bootstrap) as producer:
            launcher = TrainingLauncher(settings, storage, producer)
            await launcher.launch("test")
            while launcher.process is None:  # the child is running (it needs seconds to start)
                await asyncio.sleep(0.05)
            await launcher.stop()
            return launcher.last

    with caplog.at_level(logging.INFO, logger="streams.retraining.launcher"):
        outcome = asyncio.run(go())
    assert outcome["status"] == "cancelled" and "worker stopped" in outcome["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert metrics.TRAINING_RUNS.labels(status="failed")._value.get() == failed_before
    [row] = run_table.runs(storage)
    assert row["status"] == "failed" and row["error"] == "cancelled: the worker stopped"


def test_trainer_service_skips_bad_job_messages_and_runs_the_next(storage, settings, broker, read_dead_letters):
    from streams.cli.training import distill_config_from
    from streams.retraining.trainer_service import run_trainer

    s = settings.replace(topic_training_jobs=f"jobs-{settings.app_id}",
                         topic_training_jobs_dlq=f"jobs-dlq-{settings.app_id}")
    ensure_topics(broker.bootstrap, s)
    produce(broker.bootstrap, s.topic_training_jobs, [(b"job", value) for value in (  # None: a tombstone
        None, b"{not json", b'{"trigger": "labels"}', b'{"run_id": "r-x", "args": 7}',
        b'{"run_id": "r-bogus", "args": "--bogus"}', b'{"run_id": "r-epochs", "args": "--epochs x"}',
        b'{"run_id": "r-quote", "args": "--teacher \'unclosed"}',
        b'{"run_id": "r-good", "trigger": "labels", "args": "--backbone tiny"}')])
    _labels(storage, 3)  # too few to train: the good job runs and fails, recorded
    for _ in range(4):  # bad args fail their run (argparse's SystemExit once ended the trainer)
        run_trainer(s, broker.bootstrap, storage, distill_config_from, once=True)
    rows = {row["run_id"]: row for row in run_table.runs(storage)}
    assert set(rows) == {"r-bogus", "r-epochs", "r-quote", "r-good"}
    assert {row["status"] for row in rows.values()} == {"failed"}
    assert "--bogus" in rows["r-bogus"]["error"] and "invalid int value" in rows["r-epochs"]["error"]
    assert "quotation" in rows["r-quote"]["error"] and "too few labels" in rows["r-good"]["error"]
    # the four messages that are not jobs sit on the DLQ with the common headers
    letters = read_dead_letters(s.topic_training_jobs_dlq, 4)
    assert [(h["source_offset"], h["reason"]) for _, h in letters] == [
        ("0", "bad_message"), ("1", "bad_message"), ("2", "bad_message"), ("3", "bad_message")]
    assert {h["source_topic"] for _, h in letters} == {s.topic_training_jobs}
    assert [value for value, _ in letters] == [b"", b"{not json", b'{"trigger": "labels"}',
                                               b'{"run_id": "r-x", "args": 7}']


def test_distill_options_default_to_the_config_and_parse_every_knob():
    """A triggered run with no options trains exactly the DistillConfig the README documents;
    each option lands on its field (a new option not wired through would fail here)."""
    from streams.cli.training import distill_config_from
    from training.config import DistillConfig

    assert distill_config_from("") == DistillConfig()
    config = distill_config_from("--epochs 2 --lr 3e-5 --augment 0.5 --alpha 0.1 --beta 0.2 --gamma 0.7 "
                                 "--temperature 3 --tolerance 0.05 --max-labels 9 --max-test 7 --max-length 32 "
                                 "--backbone tiny --teacher /m --teacher-epochs 4")
    assert (config.student_epochs, config.student_lr, config.augment_multiple) == (2, 3e-5, 0.5)
    assert (config.alpha, config.beta, config.gamma, config.temperature) == (0.1, 0.2, 0.7, 3.0)
    assert (config.tolerance, config.max_labels, config.max_test, config.max_length) == (0.05, 9, 7, 32)
    assert (config.student_backbone, config.teacher_path, config.teacher_epochs) == ("tiny", "/m", 4)
