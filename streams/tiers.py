"""Frequency tiers and routing of pairs that enter one.

A pair's frequency is its count in ``pair_counts`` over the horizon (the last
``horizon_days`` UTC days up to the newest day in the batch). Tiers: low >= tier_low,
medium >= tier_medium, high >= tier_high. When a pair's frequency reaches a tier above the
one recorded in the ledger ``pair_tiers`` it is produced once to ``pairs-to-score`` with that
tier and count (a pair that jumps two tiers in one batch is routed once, at the higher).

Why the ledger and not per-pair state in one partition: ClickHouse already sums the counts
of every worker, so whoever writes last sees the true total; comparing it with the ledger
means a crossing is never missed whichever worker wrote the increment, with no second Kafka
hop. Routing is at-least-once (the ledger row follows the produce); consumers are idempotent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections import Counter

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from . import metrics
from .config import Settings
from .produce import send_batched
from .storage import Storage
from .storage.base import timestamp_array

TIER_NAMES = {1: "low", 2: "medium", 3: "high"}


class TierRouter:
    def __init__(self, settings: Settings, storage: Storage, producer=None):
        self.settings = settings
        self.storage = storage
        self.producer = producer  # aiokafka producer, set by the ingest
        self.last_routed = 0
        self.routed_total = 0  # messages produced to pairs-to-score by this router

    def crossings(self, touched_pairs: pa.Table) -> pa.Table:
        """item_a, item_b, tier (new), total: the touched pairs now above their routed tier.

        ``touched_pairs`` has columns item_a, item_b, day (increments; repeats are fine)."""
        st = self.storage
        s = self.settings
        batch = uuid.uuid4().hex
        newest_day = pc.max(touched_pairs.column("day")).as_py()
        touched_pairs = touched_pairs.group_by(["item_a", "item_b"]).aggregate([])
        st.insert_arrow("pair_touches", pa.table({
            "batch": pa.array([batch] * touched_pairs.num_rows),
            "item_a": touched_pairs.column("item_a"),
            "item_b": touched_pairs.column("item_b"),
        }))
        touched = f"SELECT item_a, item_b FROM {st.table('pair_touches')} WHERE batch = {{batch:String}}"
        return st.query_arrow(
            f"""SELECT item_a, item_b, tier, total FROM (
                    SELECT t.item_a AS item_a, t.item_b AS item_b, t.total AS total,
                           toUInt8(multiIf(t.total >= {{high:UInt64}}, 3,
                                           t.total >= {{medium:UInt64}}, 2, 1)) AS tier,
                           r.routed AS routed
                    FROM (
                        SELECT item_a, item_b, sum(count) AS total
                        FROM {st.table('pair_counts')}
                        WHERE day >= {{lo:Date}} AND day <= {{hi:Date}}
                          AND (item_a, item_b) IN ({touched})
                        GROUP BY item_a, item_b
                        HAVING total >= {{low:UInt64}}
                    ) AS t
                    LEFT JOIN (
                        SELECT item_a, item_b, max(tier) AS routed
                        FROM {st.table('pair_tiers')}
                        WHERE (item_a, item_b) IN ({touched})
                        GROUP BY item_a, item_b
                    ) AS r ON t.item_a = r.item_a AND t.item_b = r.item_b
                ) WHERE tier > routed""",
            {
                "batch": batch,
                "lo": (newest_day - dt.timedelta(days=s.horizon_days - 1)).isoformat(),
                "hi": newest_day.isoformat(),
                "low": s.tier_low, "medium": s.tier_medium, "high": s.tier_high,
            },
        )

    async def route(self, touched_pairs: pa.Table) -> int:
        crossings = await asyncio.to_thread(self.crossings, touched_pairs)
        self.last_routed = n = crossings.num_rows
        self.routed_total += n
        if not n:
            return 0
        now = time.time()
        a = crossings.column("item_a").to_pylist()
        b = crossings.column("item_b").to_pylist()
        tiers = crossings.column("tier").to_pylist()
        counts = crossings.column("total").to_pylist()
        keys = [f"{x}|{y}".encode() for x, y in zip(a, b)]
        dumps = orjson.dumps
        values = [dumps({"item_a": x, "item_b": y, "tier": TIER_NAMES[t], "count": c, "routed_at": now})
                  for x, y, t, c in zip(a, b, tiers, counts)]
        await send_batched(self.producer, self.settings.topic_pairs_to_score,
                           zip(keys, values, [None] * n))
        for tier, k in Counter(tiers).items():
            metrics.PAIRS_ROUTED.labels(tier=TIER_NAMES[tier]).inc(k)
        await asyncio.to_thread(self.storage.insert_arrow, "pair_tiers", pa.table({
            "item_a": crossings.column("item_a"), "item_b": crossings.column("item_b"),
            "tier": crossings.column("tier"), "count": crossings.column("total").cast(pa.uint64()),
            "routed_at": timestamp_array([now] * n),
        }))
        return n
