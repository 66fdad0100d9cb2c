"""ClickHouse server through clickhouse-connect (HTTP), for production deployments."""

from __future__ import annotations

import time
import uuid
from typing import Any, Mapping
from urllib.parse import urlparse

import pyarrow as pa

from streams.core.storage.base import Storage, StorageError, check_dedup_token, check_identifier

FENCED_QUERY_PREFIX = "pairstream-fenced-"


class ServerStorage(Storage):
    """clickhouse-server at ``url`` (http[s]://user@host:port/database).

    Fenced inserts (``insert_arrow_if``) send the batch as the body of ``INSERT ... SELECT ...
    FROM input(structure) WHERE condition FORMAT Arrow``, so the condition is checked by the
    statement that writes; each carries a ``query_id`` starting ``pairstream-fenced-`` so a new
    owner can kill and wait out the ones still running when it claims (``settle_fenced``).
    One server (or one shard): the owner table is read where the claim was written. On a
    replicated cluster write claims with ``insert_quorum`` and read with
    ``select_sequential_consistency`` (docs/ingest.md)."""

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
        self._structures: dict[str, dict[str, str]] = {}

    def command(self, sql: str, params: Mapping[str, Any] | None = None, data: bytes | None = None,
                settings: dict | None = None) -> None:
        try:
            self._client.command(sql, parameters=dict(params) if params else None, data=data,
                                 settings=settings)
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
        settings = _insert_settings(dedup_token, unique_keys)
        try:
            self._client.insert_arrow(
                check_identifier(table), data, database=self.database, settings=settings
            )
        except Exception as exc:
            raise StorageError(str(exc)) from exc

    def insert_arrow_if(self, table: str, data: pa.Table, condition: str, params: Mapping[str, Any],
                        dedup_token: str | None = None, unique_keys: bool = False) -> int | None:
        if data.num_rows == 0:
            return 0
        import pyarrow.ipc as ipc

        types = self._column_types(table)
        columns = [check_identifier(name) for name in data.column_names]
        structure = ", ".join(f"{name} {types[name]}" for name in columns)
        settings = {**_insert_settings(dedup_token, unique_keys),
                    "query_id": f"{FENCED_QUERY_PREFIX}{uuid.uuid4().hex}"}
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, data.schema) as writer:
            writer.write_table(data)
        names = ", ".join(columns)
        # the structure comes from the server's own catalogue (system.columns), not from data
        literal = "'" + structure.replace("\\", "\\\\").replace("'", "\\'") + "'"
        self.command(
            f"INSERT INTO {self.table(table)} ({names}) SELECT {names} FROM input({literal}) "
            f"WHERE {condition} FORMAT Arrow",
            params, data=sink.getvalue().to_pybytes(), settings=settings)
        return None  # the caller asks the owner table instead

    def settle_fenced(self, timeout_s: float = 30.0) -> None:
        """Kill the fenced statements running now and wait until they are gone: one whose check
        ran before our claim must not commit after our restore reads. In a rebalance every live
        member has drained its writes, so what still runs is a lost member's (or a write of
        ours left from before a drop); a live one that is killed retries (an error, then the
        same statement, same dedup token)."""
        sql = "SELECT query_id FROM system.processes WHERE startsWith(query_id, {prefix:String})"
        params = {"prefix": FENCED_QUERY_PREFIX}
        running = [row[0] for row in self.query_rows(sql, params)]
        if running:
            self.command("KILL QUERY WHERE query_id IN {ids:Array(String)} SYNC", {"ids": running})
        deadline = time.monotonic() + timeout_s
        while running and time.monotonic() < deadline:
            still = {row[0] for row in self.query_rows(sql, params)}
            running = [query_id for query_id in running if query_id in still]
            if running:
                time.sleep(0.05)
        if running:
            raise StorageError(f"fenced statements of another writer still running after {timeout_s:.0f} s: "
                               f"{running[:3]}")

    def _column_types(self, table: str) -> dict[str, str]:
        if table not in self._structures:
            rows = self.query_rows(
                "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
                {"db": self.database, "t": check_identifier(table)})
            self._structures[table] = {name: ctype for name, ctype in rows}
        return self._structures[table]

    def close(self) -> None:
        self._client.close()


def _insert_settings(dedup_token: str | None, unique_keys: bool) -> dict:
    """The settings of an insert: its deduplication token, and no insert-time merge for rows the
    caller vouches are unique by the table's key (``Storage.insert_arrow``)."""
    settings: dict = {}
    if dedup_token is not None:
        settings["insert_deduplication_token"] = check_dedup_token(dedup_token)
    if unique_keys:
        settings["optimize_on_insert"] = 0
    return settings
