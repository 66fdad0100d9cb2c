"""The catalogue: item -> category in memory (what pairing needs), full rows in ClickHouse."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import pyarrow as pa

from models.text import PRODUCT_FIELDS
from streams.core import metrics
from streams.core.events import MAX_ID_CHARS, InvalidEvent, Item, parse_item
from streams.core.storage import Storage
from streams.core.storage.base import timestamp_array

log = logging.getLogger(__name__)

ITEM_COLUMNS = ("item_id", *PRODUCT_FIELDS, "price")


class Catalogue(dict):
    """``item_id -> category``; loaded from ``items`` at start, updated from the topic.

    ``version`` counts updates and a short change log lets pairing refresh its cached
    categories without rescanning the catalogue (see ``Sessionizer.sync_catalogue``)."""

    CHANGE_LOG = 256  # updates remembered; a reader further behind refreshes everything

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.version = 0
        self._changes: list[tuple[int, list[str]]] = []
        self._peak = len(self)  # most items held since the last rebuild (see ``delete``)

    def _changed(self, item_ids: list[str]) -> None:
        self.version += 1
        self._changes.append((self.version, item_ids))
        del self._changes[:-self.CHANGE_LOG]

    def changed_since(self, version: int) -> list[str] | None:
        """Item ids updated after ``version``; None when the log no longer reaches back."""
        if self._changes and self._changes[0][0] > version + 1:
            return None
        return [item for v, ids in self._changes if v > version for item in ids]

    def load(self, storage: Storage) -> "Catalogue":
        table = storage.query_arrow(
            f"SELECT item_id, argMax(category, updated_at) AS category "
            f"FROM {storage.table('items')} GROUP BY item_id"
        )
        if table.num_rows:
            ids = table.column("item_id").to_pylist()
            self.update(zip(ids, table.column("category").to_pylist()))
            self._peak = max(self._peak, len(self))
            self._changed(ids)
        metrics.CATALOGUE_ITEMS.set(len(self))
        return self

    def upsert(self, storage: Storage, items: list[Item]) -> None:
        """Write items to ClickHouse first, then make them visible to pairing."""
        self._write(storage, [("upsert", items)])
        self._remember([("upsert", items)])

    def delete(self, storage: Storage, item_ids: list[str]) -> None:
        """Forget items (a tombstone on the compacted ``items`` topic): rows leave the
        ``items`` table (a lightweight DELETE), then pairing stops pairing them. Pair counts
        already made stay: they happened."""
        self._write(storage, [("delete", item_ids)])
        self._remember([("delete", item_ids)])

    def apply(self, storage: Storage, messages: list[tuple[bytes | None, bytes | None]],
              max_bytes: int = 65536) -> Applied:
        """Apply ``items`` messages (key, value) in order: an empty value deletes the item named
        by the key, anything else is validated and upserted; invalid ones are logged and
        returned as rejected (for the DLQ), never stopping the others."""
        steps, outcome = _plan(messages, max_bytes)
        self._write(storage, steps)
        self._remember(steps)
        return outcome

    async def apply_async(self, storage: Storage, messages: list[tuple[bytes | None, bytes | None]],
                          max_bytes: int = 65536, remember: bool = True) -> Applied:
        """``apply`` for the worker's event loop: the ClickHouse writes run in a thread (a
        DELETE can take a second, and the loop also runs the click ingest and the web
        server); the in-memory changes happen on the loop, where pairing reads them, unless
        ``remember`` is off (a ``CatalogueFollower`` keeps the memory side)."""
        steps, outcome = _plan(messages, max_bytes)
        await asyncio.to_thread(self._write, storage, steps)
        if remember:
            self._remember(steps)
        return outcome

    def follow(self, messages: list[tuple[bytes | None, bytes | None]], max_bytes: int = 65536) -> None:
        """The in-memory side of ``apply`` alone, quietly (the writer of the ``items`` table
        logs and dead-letters what is invalid): ``CatalogueFollower``'s step."""
        steps, _ = _plan(messages, max_bytes, quiet=True)
        self._remember(steps)

    @staticmethod
    def _write(storage: Storage, steps: list[tuple[str, list]]) -> None:
        """The ClickHouse side of ``steps``, in order: one insert per run of upserts, one
        DELETE per run of tombstones."""
        for kind, values in steps:
            if not values:
                continue
            if kind == "delete":
                storage.command(f"DELETE FROM {storage.table('items')} WHERE item_id IN {{ids:Array(String)}}",
                                {"ids": values})
                continue
            columns = {name: [getattr(item, name) for item in values] for name in ITEM_COLUMNS}
            storage.insert_arrow("items", pa.table({
                **{name: pa.array(v, pa.string()) for name, v in columns.items() if name != "price"},
                "price": pa.array(columns["price"], pa.float64()),
                "updated_at": timestamp_array([time.time()] * len(values)),
            }))

    def _remember(self, steps: list[tuple[str, list]]) -> None:
        """The in-memory side of ``steps`` (after ``_write``), then one change-log entry each."""
        for kind, values in steps:
            if not values:
                continue
            if kind == "delete":
                for item_id in values:
                    self.pop(item_id, None)
                if self._peak > 4096 and len(self) < self._peak // 2:
                    # a dict keeps its table after deletes: rebuild it in place (pairing holds
                    # this object) once half of what it held is gone, so memory follows it
                    kept = dict(self)
                    self.clear()
                    self.update(kept)
                    self._peak = len(self)
                self._changed(list(values))
            else:
                for item in values:
                    self[item.item_id] = item.category
                self._peak = max(self._peak, len(self))
                self._changed([item.item_id for item in values])
        metrics.CATALOGUE_ITEMS.set(len(self))


def _plan(messages: list[tuple[bytes | None, bytes | None]], max_bytes: int, quiet: bool = False
          ) -> tuple[list[tuple[str, list]], Applied]:
    """``items`` messages as ordered runs of ("upsert", items) and ("delete", ids), and what
    was rejected: validation only, no I/O."""
    outcome = Applied()
    steps: list[tuple[str, list]] = []

    def add(kind: str, value) -> None:
        if not steps or steps[-1][0] != kind:
            steps.append((kind, []))
        steps[-1][1].append(value)

    for index, (key, value) in enumerate(messages):
        if value:
            try:
                add("upsert", parse_item(value, max_bytes))
                outcome.upserted += 1
            except InvalidEvent as bad:
                if not quiet:
                    log.warning("bad item message skipped: %s", bad)
                outcome.rejected.append((index, bad.reason, bad.detail))
            continue
        item_id = _tombstone_id(key)
        if item_id is None:
            if not quiet:
                log.warning("item tombstone without a valid key skipped: %r", (key or b"")[:200])
            outcome.rejected.append((index, "bad_tombstone", "a tombstone's key must be an item id "
                                     f"of 1 to {MAX_ID_CHARS} UTF-8 characters"))
            continue
        add("delete", item_id)
        outcome.deleted += 1
    return steps, outcome


@dataclass
class Applied:
    """What ``Catalogue.apply`` did with a batch of ``items`` messages."""

    upserted: int = 0
    deleted: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index, reason, detail)


def _tombstone_id(key: bytes | None) -> str | None:
    try:
        item_id = (key or b"").decode()
    except UnicodeDecodeError:
        return None
    return item_id if 0 < len(item_id) <= MAX_ID_CHARS else None
