"""ClickHouse server through clickhouse-connect (HTTP), for production deployments.

The same code runs on clickhouse-connect's in-process chDB interface (a ``chdb://`` URL), so
every statement and insert of this path runs in ``make test`` without a server.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from streams.core.storage.base import Storage, StorageError, check_dedup_token, check_identifier, string_literal

FENCED_QUERY_PREFIX = "pairstream-fenced-"
SCHEMES = ("http", "https", "chdb")


def client_arguments(url: str, password: str = "", database: str = "pairstream") -> tuple[dict, str]:
    """``(clickhouse_connect.get_client keyword arguments, database)`` for a URL:
    ``http[s]://user[:password]@host[:port]/database`` or ``chdb:///data/path`` (the in-process
    engine; the database then comes from the setting). ``password`` (the setting, kept out of
    URLs and logs) wins over one in the URL; ports default to 8123 and 8443."""
    parsed = urlsplit(url)
    if parsed.scheme not in SCHEMES:
        # the scheme only: the URL may hold a password
        raise ValueError(f"ClickHouse URL must start with http://, https:// or chdb://, not "
                         f"{parsed.scheme + '://' if parsed.scheme else 'a URL without a scheme'}")
    if parsed.scheme == "chdb":
        path = unquote(parsed.netloc + parsed.path)
        if not path or path in ("memory", ":memory:"):
            raise ValueError("a chdb:// URL needs a data path (chdb:///var/lib/pairstream/chdb)")
        return {"interface": "chdb", "path": path}, check_identifier(database)
    secure = parsed.scheme == "https"
    arguments = {
        "host": parsed.hostname or "localhost",
        "port": parsed.port or (8443 if secure else 8123),
        "username": unquote(parsed.username) if parsed.username else "default",
        "password": password or unquote(parsed.password or ""),
        "secure": secure,
        "compress": "lz4",
    }
    return arguments, check_identifier(parsed.path.strip("/") or database)


def connect(url: str, password: str = "", database: str = "pairstream"):
    """A clickhouse-connect client for ``url`` and the database to use."""
    import clickhouse_connect

    arguments, database = client_arguments(url, password, database)
    try:
        return clickhouse_connect.get_client(**arguments), database
    except Exception as exc:
        where = arguments.get("host") or arguments.get("path")
        raise StorageError(f"cannot reach ClickHouse at {where}: {exc}") from exc


class ServerStorage(Storage):
    """clickhouse-server at ``url`` (http[s]://user@host:port/database).

    Fenced inserts (``insert_arrow_if``) send the batch as the body of ``INSERT ... SELECT ...
    FROM input(structure) WHERE condition FORMAT Arrow``, so the condition is checked by the
    statement that writes; each carries a ``query_id`` starting ``pairstream-fenced-`` so a new
    owner can kill and wait out the ones still running when it claims (``settle_fenced``).
    One server (or one shard): the owner table is read where the claim was written. On a
    replicated cluster write claims with ``insert_quorum`` and read with
    ``select_sequential_consistency`` (docs/ingest.md)."""

    def __init__(self, url: str = "", password: str = "", database: str = "pairstream",
                 client: Any = None):
        """Connect to ``url``; or use ``client`` (a clickhouse-connect client made elsewhere, e.g.
        with its own TLS or pool settings) with ``database``."""
        if client is None:
            client, database = connect(url, password, database)
        self._client = client
        self.database = check_identifier(database)
        # clickhouse-connect 1.13's chDB interface reads a statement's body as text: a binary
        # body (the fenced insert's Arrow) travels as a file there (see ``insert_arrow_if``)
        self._body_as_file = str(getattr(client, "uri", "")).startswith("chdb:")
        self._structures: dict[str, dict[str, str]] = {}

    def describe(self) -> str:
        where = getattr(self._client, "uri", None) or type(self._client).__name__
        return f"server {where} (clickhouse-connect), database {self.database}"

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
        # the structure comes from the server's own catalogue (system.columns), not from data
        structure = string_literal(", ".join(f"{name} {types[name]}" for name in columns))
        settings = {**_insert_settings(dedup_token, unique_keys),
                    "query_id": f"{FENCED_QUERY_PREFIX}{uuid.uuid4().hex}"}
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, data.schema) as writer:
            writer.write_table(data)
        body = sink.getvalue().to_pybytes()
        names = ", ".join(columns)

        def statement(source: str) -> str:
            return f"INSERT INTO {self.table(table)} ({names}) SELECT {names} FROM {source} WHERE {condition}"

        if not self._body_as_file:
            self.command(statement(f"input({structure})") + " FORMAT Arrow", params, data=body,
                         settings=settings)
            return None  # the caller asks the owner table instead
        with tempfile.NamedTemporaryFile(suffix=".arrow", delete=False) as file:
            file.write(body)
        try:
            source = f"file({string_literal(file.name)}, 'Arrow', {structure})"
            self.command(statement(source), params, settings=settings)
        finally:
            os.unlink(file.name)
        return None

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
