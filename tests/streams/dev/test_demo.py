"""`make demo` as a newcomer runs it, smaller: a real `pairstream demo` process on the embedded
stack must stream, label, train in a child process, publish, hot-reload, answer the lookup API,
print its summary and timeline, keep serving with the next steps it printed (the test follows
its curl line), stop on Ctrl-C, and leave no process behind. What differs from `make demo`:
20k clicks of 800 items and 400 users instead of 200k of 3,000 and 2,000, and the tiny student
backbone instead of MiniLM (2 teacher epochs); every other setting, the path and the output are
the newcomer's. Any traceback or ERROR line in its output fails the test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.processes import alive, descendants_alive, processes

BAD_LINE = re.compile(r"Traceback \(most recent call last\)|\bERROR\b|\bCRITICAL\b")


NO_PROGRESS_S = 150  # the demo fails only after this long without reaching a new step


def _demo_progress(out: str, data_dir) -> tuple:
    """What moves while the demo works: the steps it printed, and its training run's log (a
    busy machine slows a step down; a step that keeps advancing is not a hang)."""
    steps = len(re.findall(r"\[\d/6\]", out))
    runs = tuple(p.stat().st_size for p in sorted(data_dir.glob("runs/*/train.log")))
    return steps, runs


@pytest.mark.timeout(900)  # the waits inside follow progress; this is only the last resort
def test_demo_end_to_end(tmp_path):
    from tests.web import http

    env = {**os.environ, "PAIRSTREAM_DATA_DIR": str(tmp_path)}
    log_path = tmp_path / "demo.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "demo", "--events", "20000", "--items", "800",
         "--users", "400", "--backbone", "tiny"],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        seen, moved = None, time.monotonic()
        while "stop:      Ctrl-C" not in (out := log_path.read_text(errors="replace")):
            assert proc.poll() is None, out[-3000:]
            if (now := _demo_progress(out, tmp_path)) != seen:
                seen, moved = now, time.monotonic()
            assert time.monotonic() - moved < NO_PROGRESS_S, f"no progress for {NO_PROGRESS_S} s:\n{out[-3000:]}"
            time.sleep(0.5)
        out = log_path.read_text(errors="replace")
        # the next steps work: the partners URL of its curl line answers from the published table
        url = re.search(r"partners:\s+curl -s '(\S+)'", out).group(1)
        status, body = http(url)
        assert status == 200 and b'"partners"' in body, (status, body[:300])
        assert re.search(r"status:\s+http://127\.0\.0\.1:\d+/status", out)
        assert http(re.search(r"status:\s+(\S+)", out).group(1))[0] == 200
        # Ctrl-C as a terminal sends it: to the whole foreground process group. The broker
        # once died with it and the worker's consumers logged thousands of ERROR lines and a
        # traceback while they stopped
        os.killpg(proc.pid, signal.SIGINT)
        started = time.monotonic()
        proc.wait(timeout=180)  # 60 s was exceeded in fresh-clone suites (open: see the stop note)
        print(f"stopped {time.monotonic() - started:.1f} s after Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log_path.read_text(errors="replace")
    assert proc.returncode == 0, out[-3000:]
    assert "stopped: the worker, the broker and chDB are down" in out
    for step in ("[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6] published", "consumer lag:",
                 "top partners from the lookup API", "model (held-out test split):"):
        assert step in out, step
    timeline = re.findall(r"^  (\w+) +([\d.]+)s  ", out, re.M)
    assert [step for step, _ in timeline] == ["generate", "stack", "worker", "stream", "label", "distil",
                                              "publish", "reload", "lookup"], timeline
    # the distillation line said what the run was doing (sampled once a second, so a short
    # phase may pass between two samples), and the run's log holds every phase
    for doing in ("teacher epoch 1/2: loss", "publishing: students score"):
        assert doing in out, doing
    assert re.search(r"POST /v1/pair-scores for \d+ pairs: model v\d", out)
    report = re.search(r"report: (\S+report\.html)", out).group(1)
    (train_log,) = [p.read_text() for p in tmp_path.glob("runs/*/train.log")]
    for phase in ("teacher epoch 1/2: loss", "cross student: distilling", "export: both students"):
        assert phase in train_log, phase
    html = open(report).read()
    assert "<img" in html and "Spearman" in html
    assert "pairstream-ingest" in out and "STOP" not in out
    bad = [line for line in out.replace("\r", "\n").splitlines() if BAD_LINE.search(line)]
    assert not bad, bad[:20]
    # nothing left behind: no broker, no training child
    bootstrap = re.search(r"Kafka (127\.0\.0\.1:\d+)", out).group(1)
    left = [cmd for _, state, cmd in processes().values() if state != "Z" and (
        f"tcp://{bootstrap}" in cmd or ("train-job" in cmd and str(tmp_path) in cmd))]
    assert not left, left


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_demo_ctrl_c_leaves_nothing_behind(tmp_path):
    import signal
    import time

    env = {**os.environ, "PAIRSTREAM_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "demo", "--events", "200000",
                             "--backbone", "tiny"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True)
    children: set = set()
    deadline = time.time() + 60
    while time.time() < deadline and len(children) < 1:
        children |= set(descendants_alive(proc.pid))  # the broker
        time.sleep(0.2)
    time.sleep(3)
    children |= set(descendants_alive(proc.pid))
    proc.send_signal(signal.SIGINT)
    try:
        # it unwinds in a few seconds; before the fix a Ctrl-C during the worker's start-up left
        # its non-daemon consumer thread running and the process never exited
        out, _ = proc.communicate(timeout=180)  # as above
    finally:
        if proc.poll() is None:
            proc.kill()
    assert children, "the demo should have started its broker"
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted:" in out and "Traceback" not in out, out[-3000:]
    time.sleep(1)
    left = [pid for pid in children if alive(pid)]
    assert not left, f"left behind: {left}"
