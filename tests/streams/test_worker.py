"""The product as people run it: ``pairstream worker`` left alone with its default settings.

Only the ports, the data directory and the intervals a test must shorten are set (the training
check and lag sampling every 2 s, and a tiny training configuration); the worker's own timers
do the rest. A marketplace goes in through the broker with ``pairstream generate`` and
``pairstream replay``, as a user would feed it. The worker must label, start a training run by
its own trigger, publish, hot-reload and answer lookups from the published table, then keep
running through more training checks, with nothing at ERROR or CRITICAL and no traceback in its
log. A broken timer (the training check once crashed the worker 30 s after start) fails here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from streams.core.embedded_broker import free_port
from tests.processes import alive, descendants_alive, niceness, processes
from tests.web import http

TRAINING = ("--backbone tiny --teacher tiny --epochs 1 --teacher-epochs 1 --max-length 48 --max-labels 300 "
            "--max-test 200")
CHECK_S = 2.0
BAD_LOG_LINE = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback \(most recent call last\)")


class Worker:
    """A ``pairstream worker`` child process, its log file and its HTTP endpoints."""

    def __init__(self, data_dir: Path, log_path: Path, settings: dict[str, str] | None = None):
        self.port, self.lookup_port = free_port(), free_port()
        self.log_path = log_path
        self.data_dir = Path(data_dir)
        chosen = {"PAIRSTREAM_DATA_DIR": str(data_dir), "PAIRSTREAM_WEB_PORT": str(self.port),
                  "PAIRSTREAM_LOOKUP_PORT": str(self.lookup_port),
                  "PAIRSTREAM_TRAINING_CHECK_S": str(CHECK_S), "PAIRSTREAM_LAG_SAMPLE_S": "2",
                  "PAIRSTREAM_TRAINING_ARGS": TRAINING, "PAIRSTREAM_TRAINING_FIRST_ARGS": TRAINING,
                  **(settings or {})}
        # the defaults for everything else, not whatever the calling shell set
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("PAIRSTREAM_")}, **chosen}
        self.started = time.monotonic()
        self.timeline: list[str] = []  # when each wait ended: in a failure's message, and with -s
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=self.env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, what: str, check, timeout: float, every: float = 0.5, progress=None):
        """Wait until ``check()`` answers; fail after ``timeout`` s, counted from the last change
        of ``progress()`` when given (a busy machine is slow, not stuck: a stage that keeps
        advancing is waited for)."""
        deadline = time.monotonic() + timeout
        seen = progress() if progress is not None else None
        while time.monotonic() < deadline:
            assert self.alive(), f"the worker exited ({self.process.returncode}) waiting for {what}:\n" + \
                self.log()[-4000:]
            got = check()
            if got:
                self.timeline.append(f"{what} at {time.monotonic() - self.started:.1f}s")
                print(self.timeline[-1])
                return got
            if progress is not None and (now := progress()) != seen:
                seen, deadline = now, time.monotonic() + timeout
            time.sleep(every)
        seen = {f"{name}{dict(labels)}": value for (name, labels), value in self.metrics().items()
                if name.startswith(("pairstream_training", "pairstream_labels", "pairstream_events_in",
                                    "pairstream_pairs_routed", "pairstream_model_reloads", "pairstream_catalogue",
                                    "pairstream_unknown_item")) and not name.endswith("_created")}
        raise AssertionError(f"no {what} within {timeout:.0f}s (after {self.timeline}); metrics {seen}; "
                             "worker log:\n" + self.log()[-4000:])

    def training_progress(self) -> tuple:
        """What moves while a run is on its way: clicks in, labels, and the runs' logs."""
        runs = sorted((self.data_dir / "runs").glob("*/train.log"))
        return (self.metric("pairstream_events_in_total", stage="ingest"),
                sum(v for (name, _), v in self.metrics().items() if name == "pairstream_labels_total"),
                tuple(run.stat().st_size for run in runs))

    def get(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        return http(f"http://127.0.0.1:{self.port}{path}", body, timeout=10)

    def lookup(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """The lookup process's port (what a re-ranker calls)."""
        return http(f"http://127.0.0.1:{self.lookup_port}{path}", body, timeout=10)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, body = self.get("/metrics")
        if status != 200:
            return {}
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(body.decode()) for sample in family.samples}

    def metric(self, name: str, **labels) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def stop(self) -> int | None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def _cli(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _assert_clean_exit(worker: Worker, code: int | None) -> None:
    """Stopped with SIGTERM, it exits 0 with nothing at ERROR or CRITICAL and no traceback."""
    log = worker.log()
    assert code == 0, log[-4000:]
    bad = [line for line in log.splitlines() if BAD_LOG_LINE.search(line)]
    assert not bad, "the worker logged errors:\n" + "\n".join(bad[:40])


def _feed(worker: Worker, tmp_path: Path, items: int, users: int, events: int) -> dict:
    """A marketplace generated and replayed through the worker's broker, as a user feeds it."""
    bootstrap = worker.wait_for("broker address", lambda: (m := re.search(
        r"worker: Kafka (\S+),", worker.log())) and m.group(1), timeout=60)
    worker.wait_for("/readyz 200", lambda: worker.get("/readyz")[0] == 200, timeout=90)
    feed = {**worker.env, "PAIRSTREAM_KAFKA_BOOTSTRAP": bootstrap}
    feed.pop("PAIRSTREAM_DATA_DIR")
    data = tmp_path / "marketplace"
    _cli(feed, "generate", "--items", str(items), "--users", str(users), "--events", str(events), "--seed", "3",
         "--out", str(data))
    assert json.loads(_cli(feed, "replay", "--items", str(data / "items.jsonl"), "--clicks",
                           str(data / "clicks.jsonl"))) == {"items": items, "clicks": events}
    return feed


@pytest.mark.timeout(900)  # the waits inside follow progress; this is only the last resort
def test_worker_left_alone_labels_trains_publishes_and_keeps_running(tmp_path):
    """On the production storage path: ``ServerStorage`` (clickhouse-connect), here over its
    in-process chDB interface; the other worker tests and the demo run the embedded default."""
    state = tmp_path / "state"
    worker = Worker(state, tmp_path / "worker.log", {"PAIRSTREAM_CLICKHOUSE_URL": f"chdb://{state / 'chdb'}",
                                                     "PAIRSTREAM_WORKER_NICE": "5"})
    try:
        # items and clicks in one go, as a newcomer replays them: the clicks wait for the items
        # created before them (once all 20,000 clicks were read before the 600 items landed and
        # paired with nothing)
        feed = _feed(worker, tmp_path, items=600, users=400, events=20000)
        bootstrap, data = feed["PAIRSTREAM_KAFKA_BOOTSTRAP"], tmp_path / "marketplace"

        # its own timer starts a run once enough labels arrived; the run promotes and publishes
        worker.wait_for("a succeeded training run", lambda: worker.metric(
            "pairstream_training_runs_total", status="succeeded") >= 1, timeout=150,
            progress=worker.training_progress)
        assert worker.metric("pairstream_training_checks_total", outcome="started") >= 1
        assert worker.metric("pairstream_unknown_item_clicks_total") == 0
        labels = sum(v for (name, _), v in worker.metrics().items() if name == "pairstream_labels_total")
        assert labels >= 200  # training_min_labels: the default that holds a first run back
        # the run's log reads as a log: one line per epoch with its loss, no progress-bar refreshes
        finished = sorted((tmp_path / "state" / "runs").glob("*/result.json"))
        text = (finished[0].parent / "train.log").read_text()
        assert "\r" not in text and re.search(r"teacher epoch 1/1: loss \d", text), text[-2000:]
        assert re.search(r"cross student epoch 1/1: loss \d", text), text[-2000:]
        # the model-updates message reaches the serving part: a hot reload
        worker.wait_for("a hot reload", lambda: worker.metric("pairstream_model_reloads_total", outcome="ok") >= 1,
                        timeout=30)
        live = [dict(labels) for (name, labels), value in worker.metrics().items()
                if name == "pairstream_live_score_version_info" and value == 1]
        assert len(live) == 1, live
        # the promotion was announced on model-updates with the score version now live
        announced = KafkaConsumer("model-updates", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                  consumer_timeout_ms=3000)
        updates = [json.loads(m.value) for m in announced]
        announced.close()
        assert updates and updates[-1]["score_version"] == live[0]["score_version"], (updates, live)

        # lookups answer from the published table
        clicks_per_item: dict[str, int] = {}
        for line in open(data / "clicks.jsonl", "rb"):
            item = json.loads(line)["item_id"]
            clicks_per_item[item] = clicks_per_item.get(item, 0) + 1
        pairs = []
        for item in sorted(clicks_per_item, key=clicks_per_item.get, reverse=True)[:50]:
            status, body = worker.get(f"/v1/items/{item}/partners?k=3")
            if status == 200:
                pairs += [[item, p["item_id"]] for p in json.loads(body)["partners"]]
            if len(pairs) >= 10:
                break
        assert pairs, "no partners for the 50 most clicked items"
        status, body = worker.get("/v1/pair-scores", json.dumps({"pairs": pairs}).encode())
        assert status == 200, body[:500]
        answer = json.loads(body)
        assert answer["score_version"] == live[0]["score_version"] and answer["model_version"]
        assert {r["source"] for r in answer["results"]} == {"table"}
        assert all(1.0 <= r["score"] <= 10.0 for r in answer["results"])

        # between trainings the published scores follow the clicks: the same clicks once more
        # double every count, and the refresh timer writes them into the live version, which
        # the lookup API applies from model-updates
        counts = {(r["item_a"], r["item_b"]): r["evidence"]["count"] for r in answer["results"]}
        assert json.loads(_cli(feed, "replay", "--clicks", str(data / "clicks.jsonl"))) == {"clicks": 20000}

        def counts_grown():
            status, body = worker.get("/v1/pair-scores", json.dumps({"pairs": pairs}).encode())
            now = json.loads(body) if status == 200 else {"results": []}
            grown = {(r["item_a"], r["item_b"]): r["evidence"]["count"] for r in now["results"]
                     if r["source"] == "table"}
            return now if grown and all(grown.get(p, 0) > counts[p] for p in counts) else None

        refreshed = worker.wait_for("the counts of the replayed clicks in the lookup", counts_grown, timeout=90)
        assert refreshed["score_version"] == live[0]["score_version"]  # updates of the live version
        assert worker.metric("pairstream_publish_refreshes_total", outcome="refreshed") >= 1
        assert worker.metric("pairstream_model_reloads_total", outcome="updates") >= 1
        assert worker.metric("pairstream_publish_refreshes_total", outcome="error") == 0

        # the lookup process (the re-ranker's port) answers as the worker does, refreshes included
        def same_on_the_lookup_port():
            asked = json.dumps({"pairs": pairs}).encode()
            (status, body), (mine, expected) = worker.lookup("/v1/pair-scores", asked), worker.get(
                "/v1/pair-scores", asked)
            return status == mine == 200 and json.loads(body) == json.loads(expected)

        worker.wait_for("the lookup port's answers equal to the worker's", same_on_the_lookup_port, timeout=30)
        assert worker.lookup("/readyz")[0] == 200
        # the lookups first on shared cores: with PAIRSTREAM_WORKER_NICE=5 the worker went 5 nicer once they ran
        table = processes()
        lookups = [pid for pid in descendants_alive(worker.process.pid)
                   if pid in table and "lookup-server" in table[pid][2]]
        assert len(lookups) == 1, lookups
        assert niceness(lookups[0]) == niceness(os.getpid())
        assert niceness(worker.process.pid) == min(19, niceness(os.getpid()) + 5)
        # one killed (the OOM killer): the worker starts it again, at the priority it started with
        os.kill(lookups[0], signal.SIGKILL)

        def restarted():
            table = processes()
            again = [pid for pid in descendants_alive(worker.process.pid)
                     if pid in table and "lookup-server" in table[pid][2] and pid != lookups[0]]
            return again if again and same_on_the_lookup_port() else None

        again = worker.wait_for("a lookup process started again", restarted, timeout=120)
        assert niceness(again[0]) == niceness(os.getpid())
        assert worker.metric("pairstream_lookup_process_restarts_total") == 1

        # and it keeps running through more checks of its training timer
        checks = sum(worker.metric("pairstream_training_checks_total", outcome=o)
                     for o in ("started", "busy", "not_due"))
        worker.wait_for("three more training checks", lambda: sum(
            worker.metric("pairstream_training_checks_total", outcome=o)
            for o in ("started", "busy", "not_due")) >= checks + 3, timeout=10 * CHECK_S + 10)
        assert worker.metric("pairstream_training_checks_total", outcome="error") == 0
        assert worker.alive() and worker.get("/healthz")[0] == 200
    finally:
        code = worker.stop()
    _assert_clean_exit(worker, code)


def _train_jobs(data_dir: Path) -> list[int]:
    """Live ``train-job`` processes of runs under ``data_dir``."""
    return [pid for pid, (_, state, cmd) in processes().items()
            if state != "Z" and "train-job" in cmd and str(data_dir) in cmd]


@pytest.mark.timeout(900)  # the waits inside follow progress; this is only the last resort
def test_a_worker_killed_mid_training_leaves_no_process_and_the_next_trains_again(tmp_path):
    """SIGKILL (the OOM killer, a harness killing one pid): the worker's broker and its training
    child end with it; the next worker on the same data directory marks the run it left behind
    abandoned and trains again instead of waiting out ``training_timeout_s``."""
    state = tmp_path / "state"
    worker = Worker(state, tmp_path / "worker.log")
    try:
        _feed(worker, tmp_path, items=600, users=400, events=20000)
        children = worker.wait_for("a training child", lambda: _train_jobs(state), timeout=150,
                                   progress=worker.training_progress)
        # batch work below the ingest and the lookup processes (PAIRSTREAM_TRAINING_NICE)
        assert {niceness(pid) for pid in children} == {niceness(worker.process.pid) + 10}
        family = [worker.process.pid, *descendants_alive(worker.process.pid)]
        assert any("tansu" in processes()[pid][2] for pid in family if pid in processes())  # the broker
        worker.process.kill()
        worker.process.wait()
        gone_by = time.monotonic() + 15
        while [pid for pid in family if alive(pid)] and time.monotonic() < gone_by:
            time.sleep(0.1)
        left = [processes()[pid][2][:120] for pid in family if alive(pid)]
        assert not left, f"left behind by a killed worker: {left}"
    finally:
        if worker.alive():
            worker.process.kill()
        worker._log.close()  # noqa: SLF001 - the harness's own file

    again = Worker(state, tmp_path / "worker-2.log")
    try:
        again.wait_for("/readyz 200", lambda: again.get("/readyz")[0] == 200, timeout=90)
        again.wait_for("a succeeded training run after the restart", lambda: again.metric(
            "pairstream_training_runs_total", status="succeeded") >= 1, timeout=150,
            progress=again.training_progress)
        assert "marked abandoned" in again.log()
    finally:
        code = again.stop()
    assert code == 0, again.log()[-4000:]


def test_worker_labels_with_a_local_model(tmp_path):
    """``pairstream worker --llm hf``: the labelling agent runs a local causal LM (a tiny Qwen2
    config here) in its worker thread, one prompt at a time, and labels routed pairs as ``llm``
    without a dead letter or an error line."""
    from models.local import build_tiny_causal_lm

    tiny = build_tiny_causal_lm(tmp_path / "tiny-lm", seed=1)
    worker = Worker(tmp_path / "state", tmp_path / "worker.log",
                    {"PAIRSTREAM_LLM_BACKEND": "hf", "PAIRSTREAM_LLM_MODEL": str(tiny)})
    try:
        _feed(worker, tmp_path, items=300, users=300, events=8000)
        worker.wait_for("50 labels from the local model", lambda: worker.metric(
            "pairstream_labels_total", source="llm") >= 50, timeout=120)
        dead = sum(v for (name, _), v in worker.metrics().items() if name == "pairstream_dead_letters_total")
        assert dead == 0 and worker.metric("pairstream_labels_total", source="heuristic") == 0
        assert worker.alive() and worker.get("/healthz")[0] == 200
    finally:
        code = worker.stop()
    _assert_clean_exit(worker, code)


@pytest.mark.parametrize("line, bad", [
    ("[2026-12-04 23:30:01,123] [77] [ERROR] [^-App]: Crashed reason=AttributeError()", True),
    ("Traceback (most recent call last):", True),
    ("[2026-12-04 23:30:01,123] [77] [WARNING] dead-lettered clicks:0:5 (bad_json): ...", False),
])
def test_the_log_check_knows_an_error_line(line, bad):
    assert bool(BAD_LOG_LINE.search(line)) is bad
