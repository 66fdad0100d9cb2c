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

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from . import metrics
from .config import Settings
from .storage import Storage
from .storage.base import timestamp_array

TIER_NAMES = {1: "low", 2: "medium", 3: "high"}


def tier_of(count: int, settings: Settings) -> int:
    if count >= settings.tier_high:
        return 3
    if count >= settings.tier_medium:
        return 2
    if count >= settings.tier_low:
        return 1
    return 0


class TierRouter:
    def __init__(self, settings: Settings, storage: Storage, producer=None):
        self.settings = settings
        self.storage = storage
        self.producer = producer  # aiokafka producer, set by the ingest
        self.last_routed = 0

    def crossings(self, touched_pairs: pa.Table) -> list[tuple[str, str, int, int]]:
        """(item_a, item_b, new tier, count) for touched pairs above their routed tier.

        ``touched_pairs`` has columns item_a, item_b, day (the batch's increments)."""
        st = self.storage
        batch = uuid.uuid4().hex
        newest_day = pc.max(touched_pairs.column("day")).as_py()
        st.insert_arrow("pair_touches", pa.table({
            "batch": pa.array([batch] * touched_pairs.num_rows),
            "item_a": touched_pairs.column("item_a"),
            "item_b": touched_pairs.column("item_b"),
        }))
        touched = f"SELECT item_a, item_b FROM {st.table('pair_touches')} WHERE batch = {{batch:String}}"
        rows = st.query_rows(
            f"""SELECT t.item_a, t.item_b, t.total, r.tier
                FROM (
                    SELECT item_a, item_b, sum(count) AS total
                    FROM {st.table('pair_counts')}
                    WHERE day >= {{lo:Date}} AND day <= {{hi:Date}}
                      AND (item_a, item_b) IN ({touched})
                    GROUP BY item_a, item_b
                    HAVING total >= {{low:UInt64}}
                ) AS t
                LEFT JOIN (
                    SELECT item_a, item_b, max(tier) AS tier
                    FROM {st.table('pair_tiers')}
                    WHERE (item_a, item_b) IN ({touched})
                    GROUP BY item_a, item_b
                ) AS r USING (item_a, item_b)""",
            {
                "batch": batch,
                "lo": (newest_day - dt.timedelta(days=self.settings.horizon_days - 1)).isoformat(),
                "hi": newest_day.isoformat(),
                "low": self.settings.tier_low,
            },
        )
        out = []
        for item_a, item_b, total, routed in rows:
            tier = tier_of(int(total), self.settings)
            if tier > int(routed or 0):
                out.append((item_a, item_b, tier, int(total)))
        return out

    async def route(self, touched_pairs: pa.Table) -> int:
        crossings = await asyncio.to_thread(self.crossings, touched_pairs)
        self.last_routed = len(crossings)
        if not crossings:
            return 0
        now = time.time()
        futures = []
        for item_a, item_b, tier, count in crossings:
            value = orjson.dumps({
                "item_a": item_a, "item_b": item_b, "tier": TIER_NAMES[tier],
                "count": count, "routed_at": now,
            })
            futures.append(await self.producer.send(
                self.settings.topic_pairs_to_score, key=f"{item_a}|{item_b}".encode(), value=value))
            metrics.PAIRS_ROUTED.labels(tier=TIER_NAMES[tier]).inc()
        for future in futures:
            await future
        a, b, tiers, counts = zip(*crossings)
        await asyncio.to_thread(self.storage.insert_arrow, "pair_tiers", pa.table({
            "item_a": pa.array(a, pa.string()), "item_b": pa.array(b, pa.string()),
            "tier": pa.array(tiers, pa.uint8()), "count": pa.array(counts, pa.uint64()),
            "routed_at": timestamp_array([now] * len(a)),
        }))
        return len(crossings)

