"""A child that must not outlive its parent, with real processes; thread budgets of a child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from streams.core import lifeline

CHILD = """
import sys, time
from streams.core.lifeline import die_with_parent
die_with_parent(int(sys.argv[1]))
print("ready", flush=True)
time.sleep(120)
"""

PARENT = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(child.pid, flush=True)
child.wait()
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap an orphan)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, within_s: float) -> float:
    started = time.monotonic()
    while _running(pid):
        assert time.monotonic() - started < within_s, f"process {pid} outlived its parent by {within_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_child_ends_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"
        assert _running(child_pid)
        os.kill(parent.pid, signal.SIGKILL)  # no clean-up: what a crash or the OOM killer does
        parent.wait()
        _wait_gone(child_pid, within_s=10)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_child_whose_parent_is_already_gone_ends_at_once():
    """The kernel's signal cannot cover a parent that died before the child asked for it: the
    child compares its parent with the pid it was handed."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(os.getpid() + 10**6)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 70 and "ready" not in done.stdout, done


def test_a_training_child_leaves_the_worker_a_core_and_waits_passively():
    assert lifeline.training_threads(3) == 3  # a setting wins
    assert lifeline.training_threads(0) == max(1, lifeline.usable_cores() - 1)
    env = lifeline.child_environment(1)
    assert env["OMP_NUM_THREADS"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_process_lowers_the_priority_of_every_thread_it_has_and_will_have():
    """``lower_own_priority``: niceness is per thread on Linux; every thread, and threads started
    after, end up the asked steps nicer (checked in a child: it is one-way)."""
    code = (
        "import os, threading, time\n"
        "from streams.core.lifeline import lower_own_priority\n"
        "base = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "t = threading.Thread(target=time.sleep, args=(2,)); t.start()\n"
        "assert lower_own_priority(3) >= 2\n"
        "tids = os.listdir('/proc/self/task')\n"
        "assert {os.getpriority(os.PRIO_PROCESS, int(x)) for x in tids} == {min(19, base + 3)}\n"
        "later = []\n"
        "u = threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0))); u.start(); u.join()\n"
        "assert later == [min(19, base + 3)], later\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_short_scheduling_slice_is_what_the_kernel_then_reports():
    """``request_short_slice`` (the lookup processes' loop thread): where it says yes, the
    kernel's own account of the thread (/proc/self/sched) shows the slice asked for."""
    code = (
        "from streams.core.lifeline import request_short_slice\n"
        "ok = request_short_slice(200_000)\n"
        "line = [l for l in open('/proc/self/sched') if l.startswith('se.slice')]\n"
        "print(ok, line[0].split(':')[1].strip() if line else 'none')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    said, slice_ns = done.stdout.split()
    if said == "False":
        pytest.skip(f"this kernel ({os.uname().release}) keeps its own slice for normal tasks")
    assert slice_ns == "200000"
