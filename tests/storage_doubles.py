"""A storage that answers nothing: what a worker's parts see while ClickHouse is down."""

from __future__ import annotations

from streams.core.storage import StorageError


class Unreachable:
    """Every call raises ``StorageError``, as the clients do when the server is unreachable."""

    def __getattr__(self, name):
        raise StorageError("connection refused (simulated outage)")
