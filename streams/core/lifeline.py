"""A child process that ends with its parent, and CPU threads that fit the machine it shares.

A worker's training child runs for minutes. When the worker dies without stopping it (SIGKILL,
an OOM kill, a test harness killing one pid), the child is re-parented and trains on: seen as an
orphan at 70% CPU holding 1.3 GB after a demo test timed out. So the child watches its parent:
Linux's parent-death signal where it works, and a thread that notices being re-parented (the
parent's pid is handed over explicitly, since the parent may already be gone when the child
starts).

Threads: torch and ONNX Runtime size their pools to every core and spin while they wait for
work. Beside a busy process, a spinning pool whose threads are descheduled waits a time slice at
every barrier: a tiny-teacher epoch took ~10 s on an idle 2-core machine and ~150 s beside two
busy processes. The child therefore leaves the worker a core and waits passively
(``child_environment``, ``training_threads``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import struct
import sys
import threading
import time

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when the thread that started it ends
    (Linux; kept across ``exec``, so a ``preexec_fn`` can set it for a binary). Elsewhere, or off
    glibc, nothing: callers that must not outlive their parent also watch it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except OSError:
        pass


def die_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """End this process when ``parent_pid`` is no longer its parent: at once where the kernel
    can say so (``parent_death_signal``), and within ``poll_s`` otherwise (the kernel's signal
    follows the parent's *thread*, and the parent may be gone before this runs)."""
    parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # gone before we got here
        _end(parent_pid)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                _end(parent_pid)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _end(parent_pid: int) -> None:
    log.error("parent process %d is gone: stopping this child", parent_pid)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(70)  # no cleanup: the run directory is the parent's, and the parent is gone


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask and, under cgroup v2, its CPU quota)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as quota_file:
            quota, period = quota_file.read().split()
        if quota != "max":
            cores = min(cores, max(1, int(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def training_threads(configured: int = 0) -> int:
    """Threads for a training child: the setting when given, else every usable core but one
    (the worker beside it keeps ingesting and serving), at least one."""
    if configured > 0:
        return configured
    return max(1, usable_cores() - 1)


def lower_priority(niceness: int):
    """A ``preexec_fn`` that starts a child ``niceness`` steps below us (batch work: a training
    run beside the lookup processes, whose 1-pair p99 rose from 2 to 7-9 ms beside three
    busy processes of equal priority and stayed at 2 ms beside the same at nice 10)."""
    def lower() -> None:
        os.nice(niceness)
    return lower


def lower_own_priority(steps: int, pid: int | None = None, keep: frozenset[int] = frozenset()) -> int:
    """Every thread of this process (or of ``pid``, one of ours) but the native ids in ``keep``
    ``steps`` nicer: Linux niceness is per thread, threads created later inherit their
    creator's, and a child process its forking thread's. Returns how many threads were changed.
    One-way: an unprivileged process cannot take it back, so a thread that must start children
    at the old priority (the lookup supervisor) is kept out."""
    changed = 0
    for tid in os.listdir(f"/proc/{pid or os.getpid()}/task"):
        if int(tid) in keep:
            continue
        try:
            now = os.getpriority(os.PRIO_PROCESS, int(tid))
            os.setpriority(os.PRIO_PROCESS, int(tid), min(19, now + steps))
            changed += 1
        except (ProcessLookupError, PermissionError):  # a thread that just ended
            continue
    return changed


_SCHED_ATTR = struct.Struct("IIQiIQQQII")  # struct sched_attr (VER1, 56 bytes)
_SCHED_SETATTR = {"x86_64": (314, 315), "aarch64": (274, 275)}  # (sched_setattr, sched_getattr)


def request_short_slice(slice_ns: int = 100_000) -> bool:
    """Ask the kernel for a short scheduling slice for the calling thread (Linux 6.12+ EEVDF:
    ``sched_attr.sched_runtime`` of a normal task, no privilege needed): on saturated cores a
    task that wakes with a short slice gets the CPU at its next scheduling point instead of
    after the running task's 1.4 ms slice. Latency-critical and tiny work only (the lookup
    processes); False where the kernel or the machine does not have it."""
    numbers = _SCHED_SETATTR.get(os.uname().machine)
    if numbers is None or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buffer = ctypes.create_string_buffer(_SCHED_ATTR.size)
        if libc.syscall(numbers[1], 0, buffer, _SCHED_ATTR.size, 0) != 0:
            return False
        _, policy, _, nice, priority, *_ = _SCHED_ATTR.unpack(buffer.raw)
        wanted = _SCHED_ATTR.pack(_SCHED_ATTR.size, policy, 0, nice, priority, slice_ns, 0, 0, 0, 0)
        if libc.syscall(numbers[0], 0, ctypes.create_string_buffer(wanted, _SCHED_ATTR.size), 0) != 0:
            return False
        libc.syscall(numbers[1], 0, buffer, _SCHED_ATTR.size, 0)
        return _SCHED_ATTR.unpack(buffer.raw)[5] == slice_ns  # older kernels keep their own
    except (OSError, AttributeError):
        return False


def child_environment(threads: int) -> dict[str, str]:
    """Environment for a CPU-bound child: pools sized to ``threads`` and passive waits (a
    waiting OpenMP thread sleeps instead of spinning on a core the worker needs)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
