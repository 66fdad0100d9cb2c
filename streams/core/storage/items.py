"""Reads of the catalogue table ``items`` (newest row per item), shared by scoring and training."""

from __future__ import annotations

from models.text import PRODUCT_FIELDS
from streams.core.storage.base import Storage


def latest_items_sql(storage: Storage, where: str = "1") -> str:
    """SELECT of each item's newest product fields, filtered by ``where`` (on the raw rows)."""
    cols = ", ".join(f"argMax({c}, updated_at) AS {c}" for c in PRODUCT_FIELDS)
    return f"SELECT item_id, {cols} FROM {storage.table('items')} WHERE {where} GROUP BY item_id"


def products(storage: Storage, ids: list[str]) -> dict[str, dict]:
    """item_id -> {item_id, title, category, brand, color, condition, model} for known ids."""
    if not ids:
        return {}
    table = storage.query_arrow(latest_items_sql(storage, "item_id IN {ids:Array(String)}"), {"ids": ids})
    return {row["item_id"]: row for row in table.to_pylist()} if table.num_rows else {}
