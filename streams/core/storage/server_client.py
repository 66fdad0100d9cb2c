"""ClickHouse server through clickhouse-connect (HTTP), for production deployments."""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlparse

import pyarrow as pa

from streams.core.storage.base import Storage, StorageError, check_dedup_token, check_identifier


class ServerStorage(Storage):
    """clickhouse-server at ``url`` (http[s]://user@host:port/database)."""

    def __init__(self, url: str, password: str = "", database: str = "pairstream"):
        import clickhouse_connect

        parsed = urlparse(url)
        self.database = check_identifier(parsed.path.strip("/") or database)
        try:
            self._client = clickhouse_connect.get_client(
                host=parsed.hostname or "localhost",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=parsed.username or "default",
                password=password or parsed.password or "",
                secure=parsed.scheme == "https",
                compress="lz4",
            )
        except Exception as exc:
            raise StorageError(f"cannot reach ClickHouse at {parsed.hostname}: {exc}") from exc

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise StorageError(str(exc)) from exc

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        try:
            return self._client.query_arrow(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise StorageError(str(exc)) from exc

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None,
                     unique_keys: bool = False) -> None:
        if data.num_rows == 0:
            return
        settings: dict = {}
        if dedup_token is not None:
            settings["insert_deduplication_token"] = check_dedup_token(dedup_token)
        if unique_keys:
            settings["optimize_on_insert"] = 0
        try:
            self._client.insert_arrow(
                check_identifier(table), data, database=self.database, settings=settings
            )
        except Exception as exc:
            raise StorageError(str(exc)) from exc

    def close(self) -> None:
        self._client.close()
