"""Worker processes for the tests that run one: its environment, a Python snippet in a child
process, and waiting for a condition with a message that says what did not happen."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def worker_env(settings, bootstrap):
    from streams.core.embedded_broker import free_port

    env = dict(os.environ)
    env.update({
        "PAIRSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "PAIRSTREAM_DATA_DIR": settings.data_dir,
        "PAIRSTREAM_APP_ID": settings.app_id,
        "PAIRSTREAM_TOPIC_CLICKS": settings.topic_clicks,
        "PAIRSTREAM_TOPIC_ITEMS": settings.topic_items,
        "PAIRSTREAM_TOPIC_CLICKS_DLQ": settings.topic_clicks_dlq,
        "PAIRSTREAM_TOPIC_PAIRS_TO_SCORE": settings.topic_pairs_to_score,
        "PAIRSTREAM_TOPIC_PAIRS_TO_SCORE_DLQ": settings.topic_pairs_to_score_dlq,
        "PAIRSTREAM_INGEST_BATCH_EVENTS": "300",  # many small batches: the kill lands mid-stream
        "PAIRSTREAM_CHECKPOINT_INTERVAL_S": "0.3",
        "PAIRSTREAM_SESSION_TIMEOUT_S": str(settings.session_timeout_s),  # a killed member expires sooner
        "PAIRSTREAM_LOOKUP_PORT": str(free_port()),  # several workers side by side: one each
    })
    return env


def run_python(code, env, *args):
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line), read from /proc (Linux)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry)] = (int(fields[1]), fields[0], cmdline)
    return out


def descendants_alive(pid: int) -> list[int]:
    procs = processes()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (ppid, state, _) in procs.items() if ppid == parent and state != "Z"]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    info = processes().get(pid)
    return info is not None and info[1] != "Z"


def niceness(pid: int) -> int:
    """The nice value of ``pid`` (its main thread), from /proc."""
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat[stat.rindex(")") + 2:].split()[16])
