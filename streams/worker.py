"""Start what the settings ask for: the embedded broker where no Kafka is configured, the
storage, the topics. One place, so the CLI, the demo, the benchmarks and the tests agree."""

from __future__ import annotations

import contextlib
import logging
import os
import signal as signals
import threading
from pathlib import Path
from typing import Iterator

from streams.core.config import Settings
from streams.core.embedded_broker import EmbeddedBroker
from streams.core.storage import Storage, open_storage
from streams.core.topics import ensure_topics

log = logging.getLogger(__name__)


@contextlib.contextmanager
def kafka(settings: Settings) -> Iterator[str]:
    """Yield a bootstrap address: the configured cluster, or a Tansu started for the block."""
    if not settings.embedded_kafka:
        yield settings.kafka_bootstrap
        return
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    with embedded_broker(settings) as broker:
        log.info("embedded Kafka (Tansu) on %s, %s log", broker.bootstrap, settings.embedded_log)
        yield broker.bootstrap


@contextlib.contextmanager
def embedded_broker(settings: Settings, port: int | None = None) -> Iterator[EmbeddedBroker]:
    """Tansu on memory, or on the embedded SeaweedFS under ``data_dir/log`` (durable): the
    broker stops first, then its storage."""
    data_dir = Path(settings.data_dir)
    if not settings.durable_log:
        with EmbeddedBroker(port, log_path=data_dir / "tansu.log") as broker:
            yield broker
        return
    from streams.core.embedded_s3 import BUCKET, EmbeddedObjectStore

    with EmbeddedObjectStore(data_dir / "log", log_path=data_dir / "seaweedfs.log") as store, \
            EmbeddedBroker(port, log_path=data_dir / "tansu.log", storage_engine=f"s3://{BUCKET}/",
                           environment=store.environment()) as broker:
        yield broker


@contextlib.contextmanager
def stack(settings: Settings) -> Iterator[tuple[str, Storage]]:
    """Kafka + ClickHouse + topics, torn down at the end of the block."""
    with kafka(settings) as bootstrap:
        ensure_topics(bootstrap, settings)
        storage = open_storage(settings)
        try:
            yield bootstrap, storage
        finally:
            storage.close()


def run_worker(settings: Settings, bootstrap: str, storage: Storage, web: bool = True) -> None:
    """Run a Faust worker in this process until it is stopped (SIGINT/SIGTERM)."""
    from faust.worker import Worker

    from streams.app import create_app

    class BoundedShutdownWorker(Worker):
        """Faust's worker, with its stop on a signal bounded by ``shutdown_timeout_s``: stopping
        commits offsets and leaves the group, which waits forever on a broker that is gone."""

        def _schedule_shutdown(self, signal) -> None:
            _exit_after(settings.shutdown_timeout_s, signals.Signals(signal))
            super()._schedule_shutdown(signal)

    app = create_app(settings, bootstrap, storage, web=web)
    worker = BoundedShutdownWorker(app, loglevel=settings.log_level,
                                   quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


_deadline: threading.Timer | None = None


def _exit_after(seconds: float, signal) -> None:
    """Exit the process with status 1 if it is still stopping ``seconds`` from now (once)."""
    global _deadline
    if _deadline is not None:
        return

    def give_up() -> None:
        log.error("still stopping %.0fs after %s: exiting now (ClickHouse holds the state; a restart "
                  "resumes exactly)", seconds, getattr(signal, "name", signal))
        logging.shutdown()
        os._exit(1)

    _deadline = threading.Timer(seconds, give_up)
    _deadline.daemon = True
    _deadline.start()
