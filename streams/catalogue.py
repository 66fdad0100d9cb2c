"""The catalogue: item -> category in memory (what pairing needs), full rows in ClickHouse."""

from __future__ import annotations

import time

import pyarrow as pa

from . import metrics
from .events import Item
from .storage import Storage
from .storage.base import timestamp_array

ITEM_COLUMNS = ("item_id", "title", "category", "brand", "color", "condition", "model", "price")


class Catalogue(dict):
    """``item_id -> category``; loaded from ``items`` at start, updated from the topic."""

    def load(self, storage: Storage) -> "Catalogue":
        table = storage.query_arrow(
            f"SELECT item_id, argMax(category, updated_at) AS category "
            f"FROM {storage.table('items')} GROUP BY item_id"
        )
        if table.num_rows:
            self.update(zip(table.column("item_id").to_pylist(), table.column("category").to_pylist()))
        metrics.CATALOGUE_ITEMS.set(len(self))
        return self

    def upsert(self, storage: Storage, items: list[Item]) -> None:
        """Write items to ClickHouse first, then make them visible to pairing."""
        if not items:
            return
        now = time.time()
        columns = {name: [getattr(item, name) for item in items] for name in ITEM_COLUMNS}
        table = pa.table({
            **{name: pa.array(values, pa.string()) for name, values in columns.items() if name != "price"},
            "price": pa.array(columns["price"], pa.float64()),
            "updated_at": timestamp_array([now] * len(items)),
        })
        storage.insert_arrow("items", table)
        for item in items:
            self[item.item_id] = item.category
        metrics.CATALOGUE_ITEMS.set(len(self))
