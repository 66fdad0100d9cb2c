"""Who clicked what, per UTC day: the user-item graph that behaviour statistics read.

``pair_counts`` says how often two items were clicked in one session window; it cannot say
*by how many users*, nor how popular each item is on its own, and both are what separates a
pair that goes together from two bestsellers that everyone clicks anyway (lift, Jaccard,
Swing: ``streams.core.storage.stats``). So every ingest batch also writes its valid clicks
aggregated to ``(user_id, item_id, day) -> clicks`` in ``user_item_days``, with the same
insert-deduplication token as the batch's ``pair_counts`` insert: exactly once, rebuilt
identically after a crash, like the counts.

Every valid click counts, whether or not its item is in the catalogue yet (an item's
popularity does not depend on when its catalogue row arrived).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("day", pa.date32()),
    ("clicks", pa.uint64()),
])
KEYS = ["user_id", "item_id", "day"]


def user_item_days(users: Sequence[str], items: Sequence[str], times) -> pa.Table | None:
    """One fetch's clicks aggregated per (user, item, UTC day); None when there are none."""
    if not len(users):
        return None
    days = (np.asarray(times, np.float64) // 86400).astype(np.int32)
    table = pa.table({
        "user_id": pa.array(users, pa.string()),
        "item_id": pa.array(items, pa.string()),
        "day": pa.array(days).cast(pa.date32()),
        "clicks": pa.array(np.ones(len(users), np.uint64)),
    })
    return aggregate_user_item_days(table)


def aggregate_user_item_days(table: pa.Table) -> pa.Table:
    """Rows summed per (user, item, day), in a deterministic order (a rebuilt batch must
    produce the same block)."""
    summed = table.group_by(KEYS, use_threads=False).aggregate([("clicks", "sum")])
    # a deterministic order: a rebuilt batch must produce the same block (same token)
    return pa.table({
        "user_id": summed.column("user_id"), "item_id": summed.column("item_id"),
        "day": summed.column("day"), "clicks": summed.column("clicks_sum").cast(pa.uint64()),
    }, schema=SCHEMA).sort_by([(k, "ascending") for k in KEYS])
