"""``pair_tiers``: the ledger of pairs routed to scoring, one row per (pair, tier) crossing.

The ingest's tier router writes it (``streams.ingest.tiers``); on-call's status page and the
demo read it here, with the tier names of ``streams.core.records``."""

from __future__ import annotations

from streams.core.records import tier_name
from streams.core.storage.base import Storage


def newest(storage: Storage, limit: int) -> list[dict]:
    """The most recently routed pairs, newest first (the newly frequent pairs)."""
    rows = storage.query_rows(
        f"SELECT item_a, item_b, tier, count, toFloat64(routed_at) FROM {storage.table('pair_tiers')} "
        "ORDER BY routed_at DESC LIMIT {n:UInt32}", {"n": limit})
    return [{"item_a": a, "item_b": b, "tier": tier_name(t), "count": c, "routed_at": at}
            for a, b, t, c, at in rows]


def routed_by_tier(storage: Storage) -> dict[str, int]:
    """Pairs routed so far per tier name."""
    rows = storage.query_rows(f"SELECT tier, count() FROM {storage.table('pair_tiers')} GROUP BY tier ORDER BY tier")
    return {tier_name(t): n for t, n in rows}
