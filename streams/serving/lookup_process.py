"""Lookup processes: the lookup API served apart from the worker's work, on ``PAIRSTREAM_LOOKUP_PORT``.

Why a process: in the worker, a lookup shares one event loop and one GIL with the ingest, the
refresh and the training launcher, and waited behind them (p99 0.5-1 s on a busy worker). A
lookup process does nothing but answer: it follows the worker's exports
(``streams.serving.export``), maps each new one off its loop and swaps one reference, so every
answer comes wholly from one score version, as in the worker. The routes, limits, bearer token
and connection guard are the worker's own (``streams.serving.routes``, ``streams.serving.http``).

A pair of items the version never embedded is computed here too (the two-tower student, loaded
without its cross-encoder); only such an item's catalogue row comes from the worker
(``POST /internal/items`` on its web port), since the catalogue lives in ClickHouse.
``PAIRSTREAM_LOOKUP_PROCESSES`` > 1 share the port through ``SO_REUSEPORT``.

``/healthz``: the process's loop runs. ``/readyz``: it serves an export, and the worker touched the
export pointer within ``STALE_S`` (else 503 saying since when: the answers may be stale).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

import orjson

from streams.core import metrics
from streams.core.config import Settings
from streams.core.embedded_process import EmbeddedProcess
from streams.core.lifeline import request_short_slice
from streams.serving.export import current_export, export_root, read_export
from streams.serving.lookup import Serving, Snapshot

log = logging.getLogger(__name__)

FOLLOW_S = 0.05  # how often the pointer is looked at (one stat)
STALE_S = 30.0  # the worker's heartbeat is 2 s: 15 missed beats make this process unready


def local_url(settings: Settings, port: int) -> str:
    """This host's address of a server bound to ``web_host`` (a wildcard bind is reached on loopback)."""
    host = settings.web_host if settings.web_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def worker_url(settings: Settings) -> str:
    return local_url(settings, settings.web_port)


def worker_item_rows(settings: Settings, timeout_s: float = 10.0) -> Callable[[list[str]], dict[str, dict]]:
    """``Serving.item_rows`` of a lookup process: the catalogue rows, asked from the worker."""
    url = worker_url(settings) + "/internal/items"
    headers = {"Content-Type": "application/json"}
    if settings.api_token:
        headers["Authorization"] = f"Bearer {settings.api_token}"

    def item_rows(ids: list[str]) -> dict[str, dict]:
        request = urllib.request.Request(url, orjson.dumps({"items": ids}), headers)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return orjson.loads(response.read())["items"]
    return item_rows


class ExportFollower:
    """Swaps each new export of the worker into ``serving`` (see the module docstring)."""

    def __init__(self, root: Path, serving: Serving):
        self.root = root
        self.serving = serving
        self.loaded: str | None = None
        self.beat = 0.0  # the pointer's last mtime seen

    def _load(self, name: str) -> Snapshot:
        from models.runtime import Students

        index, meta = read_export(self.root, name)
        wanted = meta.get("students")
        students = self.serving.current.students
        if wanted is None:
            students = None
        elif getattr(students, "version", None) != wanted["version"]:
            threads = self.serving.settings.onnx_threads or 1  # one lookup at a time per process
            students = Students(wanted["version"], wanted["artifacts"], threads, cross=False)
        return Snapshot(index, students)

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            found = await asyncio.to_thread(current_export, self.root)
            if found is not None:
                name, self.beat = found
                if name != self.loaded:
                    try:
                        snapshot = await asyncio.to_thread(self._load, name)
                    except FileNotFoundError:  # removed while we read it: the next pointer names a newer one
                        pass
                    except Exception:  # noqa: BLE001 - keep serving the old one, try the next
                        log.exception("could not load export %s; still serving %s", name,
                                      self.serving.current.index.score_version)
                        metrics.MODEL_RELOADS.labels(outcome="failed").inc()
                        self.loaded = name
                    else:
                        self.loaded = name
                        self.serving.swap(snapshot, outcome="updates" if snapshot.index.score_version ==
                                          self.serving.current.index.score_version else "ok")
            try:
                await asyncio.wait_for(stop.wait(), FOLLOW_S)
            except asyncio.TimeoutError:
                pass

    async def check(self) -> tuple[bool, str]:
        """``/readyz``: an export is served and the worker's heartbeat is fresh."""
        if self.loaded is None:
            return False, "no snapshot from the worker yet"
        age = time.time() - self.beat
        version = self.serving.current.index.score_version
        if age > STALE_S:
            return False, f"the worker stopped exporting {age:.0f}s ago (serving {version})"
        return True, f"score version {version}"


async def serve_lookups(settings: Settings) -> None:
    """The lookup process's life: serve ``settings.lookup_port`` until SIGTERM or SIGINT."""
    from streams.serving.http import build_app, serve
    from streams.serving.routes import add_routes

    sys.setswitchinterval(0.001)  # a load in a thread hands the loop the GIL back within 1 ms
    short = request_short_slice()  # the loop's thread: on saturated cores, the CPU sooner
    serving = Serving(None, settings, item_rows=worker_item_rows(settings))
    follower = ExportFollower(export_root(settings.data_dir), serving)
    app = build_app({"snapshot": follower.check}, client_max_size=settings.lookup_max_body_bytes,
                    api_token=settings.api_token)
    add_routes(app, serving, settings)
    runner = await serve(app, settings.lookup_port, settings.web_host, settings.web_max_connections,
                         settings.web_header_timeout_s, settings.web_keepalive_s,
                         settings.web_max_connections_per_address, settings.web_reserved_connections,
                         reuse_port=settings.lookup_processes > 1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("lookup process %d on :%d, following %s (short scheduling slice: %s)", os.getpid(),
             settings.lookup_port, follower.root, "yes" if short else "not available")
    try:
        await follower.follow(stop)
    finally:
        await runner.cleanup()


class LookupSupervisor:
    """The worker's lookup processes, kept running: one thread starts them and starts again any
    that ends on its own (a crash, the OOM killer), counted in
    ``pairstream_lookup_process_restarts_total``. The same thread forks every one of them, so the
    worker can lower its own priority around it (``lower_own_priority(keep=...)``) and a
    restarted lookup process still gets the priority the worker started with."""

    CHECK_S = 0.5

    def __init__(self, settings: Settings):
        self.settings = settings
        self.processes: list[LookupProcess] = []
        self.thread_id: int | None = None  # native id of the supervising thread
        self._started = threading.Event()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lookup-supervisor", daemon=True)

    def start(self, timeout_s: float | None = None) -> None:
        """Start every lookup process (blocking until each answers) and the watch."""
        self._thread.start()
        self._started.wait(timeout_s)
        if self._failure is not None:
            raise self._failure
        if not self._started.is_set():
            raise TimeoutError("the lookup processes did not start")

    def _run(self) -> None:
        self.thread_id = threading.get_native_id()
        try:
            for _ in range(self.settings.lookup_processes):
                process = LookupProcess(self.settings)
                self.processes.append(process)
                process.start()
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._failure = exc
            self._started.set()
            return
        self._started.set()
        while not self._stop.wait(self.CHECK_S):
            for process in self.processes:
                if self._stop.is_set() or process.running:
                    continue
                log.warning("lookup process on :%d ended (exit code %s); starting it again",
                          self.settings.lookup_port, process.exit_code)
                metrics.LOOKUP_PROCESS_RESTARTS.inc()
                try:
                    process.start()
                except Exception:  # noqa: BLE001 - tried again at the next check
                    log.exception("a lookup process did not start again")

    def running(self) -> int:
        return sum(process.running for process in self.processes)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.CHECK_S + 200)
        for process in self.processes:
            process.stop()


class LookupProcess(EmbeddedProcess):
    """One lookup process, a child of the worker (dies with it: ``EmbeddedProcess``); its log
    lines go to the worker's output."""

    name = "lookup process"
    start_timeout_s = 180.0  # imports and a first map on a busy machine

    def __init__(self, settings: Settings):
        super().__init__(log_path=None, inherit_output=True)
        self.settings = settings

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.lookup_port}"

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAIRSTREAM_")}
        env.update(self.settings.environment())
        env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
        return [sys.executable, "-m", "streams.cli", "lookup-server"], env

    def _probe(self) -> None:
        url = local_url(self.settings, self.settings.lookup_port) + "/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status != 200:
                raise RuntimeError(f"/healthz answered {response.status}")
