"""The one storage interface both ClickHouse clients implement.

SQL is always parameterised with ClickHouse's server-side ``{name:Type}`` placeholders: values
never enter the SQL text. Bulk data moves as Arrow tables (columnar; chDB measured 2.7M rows/s
with ArrowStream against 0.4M for ``VALUES`` text).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

import pyarrow as pa

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_.:\-|]{1,256}$")


class StorageError(RuntimeError):
    """A ClickHouse call failed (server down, bad SQL, ...)."""


def check_identifier(name: str) -> str:
    """Table and database names cannot be bound as parameters: allow only plain identifiers."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def string_literal(text: str) -> str:
    """A ClickHouse string literal, for the few places a value cannot be a bound parameter."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_dedup_token(token: str) -> str:
    if not _TOKEN.match(token):
        raise ValueError(f"bad insert_deduplication_token: {token!r}")
    return token


class Storage(ABC):
    """What pairstream needs from ClickHouse, whichever engine serves it."""

    database: str

    @abstractmethod
    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, ALTER, INSERT ... SELECT)."""

    @abstractmethod
    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a SELECT and return its result as an Arrow table."""

    @abstractmethod
    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None,
                     unique_keys: bool = False) -> None:
        """Insert an Arrow table into ``database.table`` in one block.

        With ``dedup_token`` the insert is idempotent: ClickHouse drops a later insert with the
        same token (tables opt in with ``non_replicated_deduplication_window``).

        ``unique_keys``: the caller vouches that no two rows share the table's sorting key
        (an aggregate), so the insert skips collapsing them (``optimize_on_insert = 0``): for
        a SummingMergeTree block that pass is most of the insert's cost (117 -> 43 ms per
        90k pair rows, chDB). Readers sum either way, so a wrong vouch costs merges, not sums.
        """

    @abstractmethod
    def insert_arrow_if(self, table: str, data: pa.Table, condition: str, params: Mapping[str, Any],
                        dedup_token: str | None = None, unique_keys: bool = False) -> int | None:
        """``insert_arrow`` of only the rows for which ``condition`` holds, decided inside the
        insert statement itself: SQL over the inserted columns and ``params`` (placeholders, no
        values in the text). A fence: a write whose writer was superseded changes nothing,
        even if it was sent before the takeover (``streams.ingest.fencing``).

        Returns the rows the statement wrote where the engine says, None where it does not. The
        engine's figure includes rows its materialized views wrote (``pair_counts``: one per
        item and day more), so "fewer than ``data`` holds" means some were refused only for a condition that
        takes all rows or none (the ingest's per-partition fences on ``pair_counts``)."""

    def settle_fenced(self) -> None:  # noqa: B027 - a no-op where statements are serialised
        """Wait until fenced statements of other writers that were running when this is called
        have ended (their check ran before our claim; their commit must not land after our
        restore reads). Nothing to wait for where every fenced statement and every claim run
        one at a time (chDB, ``ChdbStorage``'s lock)."""

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        """Where the data lives, for logs (never a password)."""
        return type(self).__name__

    def warm_up(self) -> None:  # noqa: B027 - an optional hook, a no-op unless an engine needs it
        """Pay an engine's first-call costs before a stream starts rather than in its first
        write (nothing to pay here)."""

    # --- conveniences built on the primitives ---------------------------------------
    def query_rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        table = self.query_arrow(sql, params)
        columns = [col.to_pylist() for col in table.columns]
        return list(zip(*columns)) if columns else []

    def query_value(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        rows = self.query_rows(sql, params)
        return rows[0][0] if rows else None

    def table(self, name: str) -> str:
        """Fully qualified ``database.table``."""
        return f"{check_identifier(self.database)}.{check_identifier(name)}"

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def timestamp_array(seconds: Sequence[float]) -> pa.Array:
    """Unix seconds -> Arrow timestamp(ms, UTC), the type of our DateTime64(3, 'UTC') columns."""
    return pa.array([int(s * 1000) for s in seconds], pa.int64()).cast(pa.timestamp("ms", "UTC"))
