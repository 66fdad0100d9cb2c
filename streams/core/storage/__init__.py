"""Storage shared by ``streams`` and ``training``; never imports Faust."""

from __future__ import annotations

from streams.core.storage.base import Storage, StorageError
from streams.core.storage.migrations import migrate


def open_storage(settings, migrate_schema: bool = True) -> Storage:
    """The ClickHouse the settings point at: a server URL, or embedded chDB."""
    if settings.embedded_clickhouse:
        from streams.core.storage.chdb_client import ChdbStorage

        storage: Storage = ChdbStorage(settings.chdb_path, settings.clickhouse_database)
    else:
        from streams.core.storage.server_client import ServerStorage

        storage = ServerStorage(
            settings.clickhouse_url, settings.clickhouse_password, settings.clickhouse_database
        )
    if migrate_schema:
        migrate(storage)
    return storage


__all__ = ["Storage", "StorageError", "migrate", "open_storage"]
