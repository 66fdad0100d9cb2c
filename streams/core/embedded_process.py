"""An embedded server process (the Tansu broker, the SeaweedFS S3 server) tied to our lifetime.

No such child may outlive us, so each is tied three ways: ``stop()`` (or the context manager),
an ``atexit`` hook, and the Linux parent-death signal (which covers SIGKILL of the parent too).
It runs in its own session, so a terminal's Ctrl-C reaches only us and we stop it after the
clients that use it (a broker that died with the Ctrl-C left the worker's consumers logging
thousands of connection errors while they stopped).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from streams.core.lifeline import parent_death_signal

log = logging.getLogger(__name__)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    parent_death_signal(signal.SIGTERM)


class EmbeddedProcess:
    """Start, stop and crash one child server. A subclass says what it is (``name``, ``address``),
    how to run it (``_command``) and how to tell it is ready (``_probe``)."""

    name = "server"
    start_timeout_s = 30.0
    stop_timeout_s = 5.0

    def __init__(self, log_path: str | os.PathLike | None = None, inherit_output: bool = False):
        """Output to ``log_path``, else to ours with ``inherit_output``, else nowhere."""
        self._log_path = Path(log_path) if log_path else None
        self._inherit_output = inherit_output
        self._proc: subprocess.Popen | None = None

    def _launch(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        out: Any = open(self._log_path, "ab") if self._log_path else (None if self._inherit_output
                                                                      else subprocess.DEVNULL)
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      preexec_fn=_die_with_parent, start_new_session=True)
        atexit.register(self.stop)
        return self._proc

    def _exited(self) -> int | None:
        """The exit code if the child already ended (at start: it could not)."""
        return None if self._proc is None else self._proc.poll()

    @property
    def address(self) -> str:
        raise NotImplementedError

    def _command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and the environment the child runs with."""
        raise NotImplementedError

    def _probe(self) -> None:
        """Return once the child answers; raise (anything) while it does not yet."""
        raise NotImplementedError

    def start(self, timeout_s: float | None = None):
        """Launch the child and wait until it answers (``timeout_s``, default
        ``start_timeout_s``); a child that exits or never answers is said with the reason."""
        self._launch(*self._command())
        deadline = time.monotonic() + (self.start_timeout_s if timeout_s is None else timeout_s)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if (code := self._exited()) is not None:
                raise RuntimeError(f"{self.name} exited with code {code} at start"
                                   + (f" (its log: {self._log_path})" if self._log_path else ""))
            try:
                self._probe()
                log.info("embedded %s ready on %s", self.name, self.address)
                return self
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} did not answer on {self.address}: {last}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL, as a crash does (tests of one)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    @property
    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self):
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
