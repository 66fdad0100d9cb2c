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

import datetime as dt
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pyarrow as pa

from streams.core import metrics
from streams.core.config import Settings
from streams.core.produce import send_batched
from streams.core.records import pair_to_score_sql, tier_name
from streams.core.storage import Storage
from streams.core.storage.base import timestamp_array


@dataclass
class Routing:
    """Crossings found by one check, already encoded as ``pairs-to-score`` records."""

    crossings: pa.Table  # item_a, item_b, tier, total
    records: list  # (key, value, None)
    routed_at: float


class TierRouter:
    """Finds tier crossings (``plan``, blocking: run it in a thread), produces them (``send``)
    and records them in the ledger (``record``, blocking), in that order."""

    def __init__(self, settings: Settings, storage: Storage):
        self.settings = settings
        self.storage = storage
        self.last_routed = 0
        self.routed_total = 0  # messages produced to pairs-to-score by this router

    def crossings(self, touched_hashes: np.ndarray, newest_day: dt.date,
                  routed_at: float = 0.0) -> pa.Table:
        """item_a, item_b, tier_code (new tier), total: the touched pairs now above their routed tier,
        with ``key`` and ``value``: their ``pairs-to-score`` message, formatted by ClickHouse
        (JSON escaping in C++, not a Python loop on a thread that competes for the GIL).

        ``touched_hashes`` are the ``pair_hash`` values of the pairs incremented since the last
        check (``IdTable.touched_hashes``); the horizon ends on ``newest_day``.

        Two phases keep it exact and cheap: sums grouped by the 8-byte hash give candidates
        (a hash collision can only add a false candidate, never hide a pair), then the
        candidates' totals are recomputed grouped by the item ids themselves."""
        st = self.storage
        s = self.settings
        batch = secrets.randbits(63)
        st.insert_arrow("pair_touched_hashes", pa.table({
            "batch": pa.array(np.full(len(touched_hashes), batch, np.uint64)),
            "pair_hash": pa.array(touched_hashes, pa.uint64()),
        }))
        counts, tiers = st.table("pair_counts"), st.table("pair_tiers")
        touched = (f"SELECT pair_hash FROM {st.table('pair_touched_hashes')} "
                   f"WHERE batch = {{batch:UInt64}}")
        horizon = "day >= {lo:Date} AND day <= {hi:Date}"
        candidates = (f"SELECT pair_hash FROM {counts} WHERE {horizon} AND pair_hash IN ({touched}) "
                      f"GROUP BY pair_hash HAVING sum(count) >= {{low:UInt64}}")
        return st.query_arrow(
            f"""SELECT item_a, item_b, tier_code, total, concat(item_a, '|', item_b) AS key,
                       {pair_to_score_sql("tier_code", "total", "{now:Float64}")} AS value
                FROM (SELECT item_a, item_b, tier AS tier_code, total FROM (
                    SELECT t.item_a AS item_a, t.item_b AS item_b, t.total AS total,
                           toUInt8(multiIf(t.total >= {{high:UInt64}}, 3,
                                           t.total >= {{medium:UInt64}}, 2, 1)) AS tier,
                           r.routed AS routed
                    FROM (
                        SELECT item_a, item_b, sum(count) AS total
                        FROM {counts}
                        WHERE {horizon} AND pair_hash IN ({candidates})
                        GROUP BY item_a, item_b
                        HAVING total >= {{low:UInt64}}
                    ) AS t
                    LEFT JOIN (
                        SELECT item_a, item_b, max(tier) AS routed
                        FROM {tiers}
                        WHERE pair_hash IN ({touched})
                        GROUP BY item_a, item_b
                    ) AS r ON t.item_a = r.item_a AND t.item_b = r.item_b
                ) WHERE tier > routed)
                SETTINGS output_format_json_quote_64bit_integers = 0""",
            {
                "batch": batch,
                "now": routed_at,
                "lo": (newest_day - dt.timedelta(days=s.horizon_days - 1)).isoformat(),
                "hi": newest_day.isoformat(),
                "low": s.tier_low, "medium": s.tier_medium, "high": s.tier_high,
            },
        )

    def plan(self, touched_hashes: np.ndarray, newest_day: dt.date) -> Routing:
        """Find the crossings and encode their messages (blocking)."""
        now = time.time()
        crossings = self.crossings(touched_hashes, newest_day, now)
        if not crossings.num_rows:
            return Routing(crossings, [], now)
        keys = crossings.column("key").cast(pa.binary()).to_pylist()
        values = crossings.column("value").cast(pa.binary()).to_pylist()
        return Routing(crossings, list(zip(keys, values, repeat(None))), now)

    async def send(self, routing: Routing, producer) -> int:
        """Produce the crossings to ``pairs-to-score`` with ``producer`` (the ingest's)."""
        n = len(routing.records)
        self.last_routed = n
        self.routed_total += n
        if n:
            await send_batched(producer, self.settings.topic_pairs_to_score, routing.records)
            for tier, k in Counter(routing.crossings.column("tier_code").to_pylist()).items():
                metrics.PAIRS_ROUTED.labels(tier=tier_name(tier)).inc(k)
        return n

    def record(self, routing: Routing) -> None:
        """Write the ledger rows (after the messages are produced: at-least-once)."""
        crossings, n = routing.crossings, len(routing.records)
        if not n:
            return
        self.storage.insert_arrow("pair_tiers", pa.table({
            "item_a": crossings.column("item_a"), "item_b": crossings.column("item_b"),
            "tier": crossings.column("tier_code"), "count": crossings.column("total").cast(pa.uint64()),
            "routed_at": timestamp_array([routing.routed_at] * n),
        }))
