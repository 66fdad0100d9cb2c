"""Behaviour statistics per item pair, computed by ClickHouse from the user-item graph.

Why: a raw co-click count mostly measures popularity. Two bestsellers that everybody clicks
are co-clicked thousands of times whether or not they go together; a niche case and the one
phone it fits are co-clicked a few times, by nearly everyone who looked at either. Statistics
that compare a pair's co-occurrence with what the items' popularity predicts separate the two.

Definitions, over the horizon (the last ``horizon_days`` UTC days up to the newest day of
``user_item_days``); U_i = users who clicked item i, N = users who clicked anything:

- ``count``: co-clicks within a session window (``pair_counts``, the stream's own contract);
  ``decayed_count`` weighs day d by 0.5 ** ((newest - d) / half_life) when
  ``stats_half_life_days`` > 0 (else it equals ``count``).
- ``users`` = |U_a & U_b|, ``users_a`` = |U_a|, ``users_b`` = |U_b|.
- ``lift`` = (count + s) / (C_a * C_b / (2 T) + s): co-clicks over what the two items'
  popularity predicts, where C_i is item i's co-clicks with anything and T all co-clicks in
  the horizon (sum over i of C_i = 2 T). Additive smoothing with pseudo-count
  s = ``stats_lift_prior``: a pair with little evidence shrinks towards 1 (independence)
  instead of getting a huge ratio from one co-click of two rare items. ``pmi`` = ln(lift).
  Co-clicks rather than users: on the bestseller generator the session window separates
  better (lift AUC 0.83 against 0.74 from user co-occurrence over the horizon).
- ``jaccard`` = users / (users_a + users_b - users).
- ``swing`` (Yang et al., "Large Scale Product Graph Construction for Recommendation in
  E-commerce", Alibaba 2020; user weights as in Flink ML's Swing): the sum over unordered user
  pairs u < v who both clicked a and b of w_u * w_v / (alpha + |I_u & I_v|), with
  w_u = (|I_u| + offset) ** -power. Two users who share only a and b are strong evidence; two
  users who share everything (or click everything) are weak. Caps, as usual for Swing and
  applied to Swing only: users with more than ``swing_max_user_items`` items are skipped, and
  an item keeps its ``swing_max_item_users`` most recent users (ties by user id); |I_u| and
  I_u & I_v are taken on that capped graph. Computed on numbered users and items
  (``stats_capped``), its user pairs in buckets of users sized to ``stats_memory_mb``
  (``_swing``): memory stays bounded as the graph grows (bench/HISTORY.md).

C_i and T come from ``item_day_clicks`` (one row per item and day, kept by materialized views
on ``pair_counts`` as the ingest writes), so lift reads the items it needs instead of scanning
every pair row twice. Everything is SQL over tables that a ClickHouse cluster shards: no
process holds the graph.
A refresh writes one ``stats_version`` of ``pair_stats`` for the candidate pairs (>= the low
tier, plus labelled pairs) and readers use ``pair_stats_latest``; ``pair_evidence`` computes
count, users and lift for a few given pairs on demand (the labeller), with the same SQL terms.
``tests/streams/core/test_stats.py`` checks both against a plain-Python reference, also after a SIGKILL.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import pyarrow as pa

from streams.core.storage.base import Storage

log = logging.getLogger(__name__)

KEPT_VERSIONS = 2


@dataclass(frozen=True)
class StatsParams:
    horizon_days: int = 30
    low: int = 3
    lift_prior: float = 1.0
    half_life_days: float = 0.0
    swing_alpha: float = 1.0
    swing_user_offset: float = 15.0
    swing_user_power: float = 0.3
    swing_max_user_items: int = 200
    swing_max_item_users: int = 500
    memory_mb: float = 1500

    @classmethod
    def from_settings(cls, settings) -> "StatsParams":
        return cls(settings.horizon_days, settings.tier_low, settings.stats_lift_prior,
                   settings.stats_half_life_days, settings.swing_alpha, settings.swing_user_offset,
                   settings.swing_user_power, settings.swing_max_user_items,
                   settings.swing_max_item_users, settings.stats_memory_mb)


HORIZON_DAY_SUPPORT = 0.01  # a day ends the horizon only with this share of the busiest day's visits


def horizon(storage: Storage, horizon_days: int,
            table: str = "user_item_days") -> tuple[dt.date, dt.date] | None:
    """[first, last] UTC day of the horizon, ending on the newest day with real traffic; None if empty.

    "Real traffic": at least ``HORIZON_DAY_SUPPORT`` of the busiest day's (user, item) visits.
    Event time comes from any producer, and the newest day clicked alone let one click stamped
    2099-12-31 (valid) end the horizon in 2099, which emptied every statistic. The bound: days
    ahead holding fewer visits than 1% of the busiest day's are not taken for "today". The
    price: a new UTC day ends the horizon once it has 1% of a busy day's visits (minutes).
    Rows, not clicks: one user repeating one item is one visit a day (``user_item_days``), one
    pair clicked together many times one row a day (``pair_counts``, the publisher's)."""
    per_day = storage.query_rows(
        f"SELECT toUInt32(day), count() FROM {storage.table(table)} GROUP BY day")
    if not per_day:
        return None
    busiest = max(visits for _, visits in per_day)
    newest = max(day for day, visits in per_day if visits >= HORIZON_DAY_SUPPORT * busiest)
    last = dt.date(1970, 1, 1) + dt.timedelta(days=int(newest))
    return last - dt.timedelta(days=horizon_days - 1), last


def _user_joins_sql(edges: str, pairs: str, edge_filter: str = "") -> str:
    """LEFT JOINs that add ``users`` (users who clicked both items), ``users_a`` and ``users_b``
    to the pairs aliased ``pairs``, from the user-item edges ``edges``."""
    return f"""LEFT JOIN (
                SELECT e1.item_id AS item_a, e2.item_id AS item_b, toUInt32(count()) AS users
                FROM {edges} AS e1 INNER JOIN {edges} AS e2 ON e1.user_id = e2.user_id
                WHERE e1.item_id < e2.item_id {edge_filter}
                GROUP BY item_a, item_b
            ) AS pu ON pu.item_a = {pairs}.item_a AND pu.item_b = {pairs}.item_b
            LEFT JOIN (SELECT item_id, toUInt32(count()) AS users_a FROM {edges} GROUP BY item_id) AS ua
                ON ua.item_id = {pairs}.item_a
            LEFT JOIN (SELECT item_id, toUInt32(count()) AS users_b FROM {edges} GROUP BY item_id) AS ub
                ON ub.item_id = {pairs}.item_b"""


def _lift_sql(p: StatsParams) -> str:
    prior = float(p.lift_prior)
    return f"(count + {prior!r}) / (clicks_a * clicks_b / greatest(2 * total, 1) + {prior!r})"


def marginals_sql(t, in_horizon: str, items_filter: str = "", part: str = "") -> str:
    """item_id, clicks (C_i): an item's co-clicks with anything in the horizon; with ``part``
    (an SQL expression of ``day``), item_id, part, clicks: the same per part of the days.
    From ``item_day_clicks`` (kept by the inserts: one row per item and day, not per pair), so
    no statistic scans ``pair_counts`` for them; ``items_filter``: a condition on ``item_id``."""
    keys = "item_id, part" if part else "item_id"
    column = f", {part} AS part" if part else ""
    where = f"{in_horizon} AND {items_filter}" if items_filter else in_horizon
    return f"""(SELECT item_id{column}, sum(clicks) AS clicks FROM {t('item_day_clicks')}
               WHERE {where} GROUP BY {keys})"""


def _total_sql(t, in_horizon: str) -> str:
    """T, all co-clicks in the horizon: every co-click is counted once for each of its items."""
    return f"(SELECT intDiv(sum(clicks), 2) AS total FROM {t('item_day_clicks')} WHERE {in_horizon})"


def refresh(storage: Storage, p: StatsParams, extra_pairs_sql: str | None = None) -> int | None:
    """Compute a new ``stats_version`` of ``pair_stats``; return it (None: no clicks yet).

    Candidate pairs: co-click count >= ``p.low`` in the horizon, plus the pairs that
    ``extra_pairs_sql`` selects (item_a, item_b), by default every labelled pair."""
    span = horizon(storage, p.horizon_days)
    if span is None:
        return None
    version = time.time_ns() // 1000
    t = storage.table
    params = {"lo": span[0].isoformat(), "hi": span[1].isoformat(), "v": version,
              "low": p.low, "max_items": p.swing_max_user_items,
              "max_users": p.swing_max_item_users}
    spill = int(p.memory_mb * (1 << 20))  # an int, written into SETTINGS (which take no parameters)
    in_horizon = "day >= {lo:Date} AND day <= {hi:Date}"
    storage.command(
        f"""INSERT INTO {t('stats_edges')} (stats_version, user_id, item_id, last_day)
            SELECT {{v:UInt64}}, user_id, item_id, max(day) FROM {t('user_item_days')}
            WHERE {in_horizon} GROUP BY user_id, item_id""", params)
    extra = extra_pairs_sql or f"SELECT DISTINCT item_a, item_b FROM {t('pair_labels')}"
    half_life = float(p.half_life_days)
    decay = (f"sum(count * pow(0.5, (toUInt32(toDate({{hi:Date}})) - toUInt32(day)) / {half_life!r}))"
             if half_life > 0 else "toFloat64(sum(count))")
    edges = f"(SELECT user_id, item_id, last_day FROM {t('stats_edges')} WHERE stats_version = {{v:UInt64}})"
    # Swing's capped graph, on numbers (its user-pair join groups arrays of item numbers, not
    # strings: 21 -> 5.5 s and a third of the memory on 1M edges): heavy users out, then the
    # newest max_users users of each item; written once, read twice by the join
    ids = f"(SELECT item_id, ix FROM {t('stats_item_ids')} WHERE stats_version = {{v:UInt64}})"
    storage.command(
        f"""INSERT INTO {t('stats_item_ids')} (stats_version, item_id, ix)
            SELECT {{v:UInt64}}, item_id, toUInt32(row_number() OVER (ORDER BY item_id))
            FROM (SELECT DISTINCT item_id FROM {edges})""", params)
    storage.command(
        f"""INSERT INTO {t('stats_capped')} (stats_version, ux, ix, user_items)
            SELECT {{v:UInt64}}, toUInt32(dense_rank() OVER (ORDER BY c.user_id)), ids.ix,
                   toUInt32(count() OVER (PARTITION BY c.user_id))
            FROM (
                SELECT user_id, item_id FROM (
                    SELECT user_id, item_id, last_day, count() OVER (PARTITION BY user_id) AS all_items
                    FROM {edges})
                WHERE all_items <= {{max_items:UInt32}}
                ORDER BY item_id, last_day DESC, user_id
                LIMIT {{max_users:UInt32}} BY item_id) AS c
            INNER JOIN {ids} AS ids ON ids.item_id = c.item_id""", params)
    buckets = _swing(storage, p, params)
    log.info("statistics refresh %d: Swing in %d bucket(s) of users", version, buckets)
    storage.command(
        f"""INSERT INTO {t('pair_stats')}
            SELECT {{v:UInt64}} AS stats_version, c.item_a AS item_a, c.item_b AS item_b,
                   c.count AS count, c.decayed_count AS decayed_count,
                   users, users_a, users_b,
                   toFloat32({_lift_sql(p)}) AS lift, toFloat32(log(lift)) AS pmi,
                   toFloat32(users / greatest(users_a + users_b - users, 1)) AS jaccard,
                   ifNull(s.swing, 0) AS swing, now64(3) AS computed_at
            FROM (
                SELECT item_a, item_b, sum(n) AS count, sum(d) AS decayed_count FROM (
                    SELECT item_a, item_b, sum(count) AS n, {decay} AS d, toUInt8(0) AS listed
                    FROM {t('pair_counts')} WHERE {in_horizon} GROUP BY item_a, item_b
                    UNION ALL
                    SELECT item_a, item_b, toUInt64(0) AS n, toFloat64(0) AS d, toUInt8(1) AS listed
                    FROM ({extra})
                ) GROUP BY item_a, item_b
                HAVING count >= {{low:UInt64}} OR max(listed) = 1
            ) AS c
            {_user_joins_sql(edges, "c")}
            LEFT JOIN (
                SELECT ia.item_id AS item_a, ib.item_id AS item_b, sw.swing AS swing FROM (
                    SELECT xa, xb, toFloat32(sum(swing)) AS swing FROM {t('stats_swing')}
                    WHERE stats_version = {{v:UInt64}} GROUP BY xa, xb
                ) AS sw
                INNER JOIN {ids} AS ia ON ia.ix = sw.xa
                INNER JOIN {ids} AS ib ON ib.ix = sw.xb
            ) AS s ON s.item_a = c.item_a AND s.item_b = c.item_b
            LEFT JOIN (SELECT item_id, clicks AS clicks_a FROM {marginals_sql(t, in_horizon)}) AS ma
                ON ma.item_id = c.item_a
            LEFT JOIN (SELECT item_id, clicks AS clicks_b FROM {marginals_sql(t, in_horizon)}) AS mb
                ON mb.item_id = c.item_b
            CROSS JOIN {_total_sql(t, in_horizon)} AS tot
            SETTINGS join_use_nulls = 0, max_bytes_before_external_group_by = {spill},
                     max_bytes_before_external_sort = {spill}""", params)
    for table in ("stats_edges", "stats_item_ids", "stats_capped", "stats_swing"):
        storage.command(f"ALTER TABLE {t(table)} DROP PARTITION {{v:UInt64}}", params)
    _drop_old(storage, version)
    return version


SWING_BYTES_PER_JOIN_ROW = 40  # measured ~27 (5.4 GB for 203M user-pair join rows), with room


def swing_buckets(join_rows: int, memory_mb: float) -> int:
    """How many user buckets Swing's user-pair join is split into, so that one bucket's
    ``GROUP BY (u, v)`` fits ``memory_mb`` (its state grows with the join's rows)."""
    per_bucket = max(1, int(memory_mb * (1 << 20)) // SWING_BYTES_PER_JOIN_ROW)
    return max(1, -(-int(join_rows) // per_bucket))


def _swing(storage: Storage, p: StatsParams, params: dict) -> int:
    """Swing of every item pair of the capped graph into ``stats_swing``: the user pairs (u, v)
    who share two items or more, each adding w_u w_v / (alpha + |I_u & I_v|) to every pair of
    the items they share. The user pairs are taken in buckets of u, one statement each: a user
    pair belongs to one bucket, so the buckets' sums add up to the whole (exact), and one
    bucket's state is what the memory holds. Returns the buckets used."""
    t = storage.table
    capped = f"(SELECT ux, ix, user_items FROM {t('stats_capped')} WHERE stats_version = {{v:UInt64}})"
    join_rows = storage.query_value(
        f"SELECT sum(n * (n - 1) / 2) FROM (SELECT ix, count() AS n FROM {capped} GROUP BY ix)", params) or 0
    buckets = swing_buckets(int(join_rows), p.memory_mb)
    alpha, offset, power = (float(p.swing_alpha), float(p.swing_user_offset), float(p.swing_user_power))
    spill = int(p.memory_mb * (1 << 21))  # a safety net at twice the budget (SETTINGS take no parameters)
    for bucket in range(buckets):
        storage.command(
            f"""INSERT INTO {t('stats_swing')} (stats_version, xa, xb, swing)
                SELECT {{v:UInt64}}, pair.1 AS xa, pair.2 AS xb, sum(w) FROM (
                    SELECT arrayJoin(arrayFlatten(arrayMap((x, i) -> arrayMap(y -> (x, y),
                               arraySlice(common, i + 1)), common, arrayEnumerate(common)))) AS pair,
                           pow(iu + {offset!r}, -{power!r}) * pow(iv + {offset!r}, -{power!r})
                               / ({alpha!r} + length(common)) AS w
                    FROM (
                        SELECT e1.ux AS u, e2.ux AS v, arraySort(groupArray(e1.ix)) AS common,
                               any(e1.user_items) AS iu, any(e2.user_items) AS iv
                        FROM {capped} AS e1 INNER JOIN {capped} AS e2 ON e1.ix = e2.ix
                        WHERE e1.ux < e2.ux AND e1.ux % {{buckets:UInt32}} = {{bucket:UInt32}}
                        GROUP BY u, v HAVING length(common) >= 2)
                ) GROUP BY xa, xb
                SETTINGS max_bytes_before_external_group_by = {spill},
                         max_bytes_before_external_sort = {spill}""",
            {**params, "buckets": buckets, "bucket": bucket})
    return buckets


def _drop_old(storage: Storage, newest: int) -> None:
    versions = [v for (v,) in storage.query_rows(
        f"SELECT DISTINCT stats_version FROM {storage.table('pair_stats')} ORDER BY stats_version DESC")]
    for old in versions[KEPT_VERSIONS:]:
        storage.command(f"ALTER TABLE {storage.table('pair_stats')} DROP PARTITION {{v:UInt64}}",
                        {"v": old})


def latest(storage: Storage) -> pa.Table:
    """Every row of the newest ``pair_stats`` version (empty table when none)."""
    return storage.query_arrow(
        f"SELECT item_a, item_b, count, decayed_count, users, users_a, users_b, lift, pmi, "
        f"jaccard, swing FROM {storage.table('pair_stats_latest')} ORDER BY item_a, item_b")


def pair_evidence(storage: Storage, pairs: list[tuple[str, str]], p: StatsParams) -> dict[tuple[str, str], dict]:
    """count, users, users_a, users_b, lift (and the marginals) of the given canonical pairs, computed now
    (same definitions as ``refresh``; the labeller's routing decisions)."""
    if not pairs:
        return {}
    span = horizon(storage, p.horizon_days)
    if span is None:
        return {}
    t = storage.table
    items = sorted({x for pair in pairs for x in pair})
    params = {"lo": span[0].isoformat(), "hi": span[1].isoformat(), "items": items,
              "a": [a for a, _ in pairs], "b": [b for _, b in pairs]}
    in_horizon = "day >= {lo:Date} AND day <= {hi:Date}"
    edges = (f"(SELECT DISTINCT user_id, item_id FROM {t('user_item_days')} "
             f"WHERE {in_horizon} AND item_id IN {{items:Array(String)}})")
    wanted = "(item_a, item_b) IN arrayZip({a:Array(String)}, {b:Array(String)})"
    wanted_edges = wanted.replace("item_a", "e1.item_id").replace("item_b", "e2.item_id")
    marginals = marginals_sql(t, in_horizon, "item_id IN {items:Array(String)}")
    rows = storage.query_arrow(
        f"""SELECT q.item_a AS item_a, q.item_b AS item_b, c0.count AS count,
                   users, users_a, users_b, clicks_a, clicks_b, toFloat32({_lift_sql(p)}) AS lift
            FROM (SELECT ab.1 AS item_a, ab.2 AS item_b
                  FROM (SELECT arrayJoin(arrayZip({{a:Array(String)}}, {{b:Array(String)}})) AS ab)) AS q
            LEFT JOIN (SELECT item_a, item_b, sum(count) AS count FROM {t('pair_counts')}
                       WHERE {in_horizon} AND {wanted} GROUP BY item_a, item_b) AS c0
                ON c0.item_a = q.item_a AND c0.item_b = q.item_b
            {_user_joins_sql(edges, "q", f"AND {wanted_edges}")}
            LEFT JOIN (SELECT item_id, clicks AS clicks_a FROM {marginals}) AS ma ON ma.item_id = q.item_a
            LEFT JOIN (SELECT item_id, clicks AS clicks_b FROM {marginals}) AS mb ON mb.item_id = q.item_b
            CROSS JOIN {_total_sql(t, in_horizon)} AS tot
            SETTINGS join_use_nulls = 0""", params)
    return {(r["item_a"], r["item_b"]): r for r in rows.to_pylist()} if rows.num_rows else {}


def mark_changes(storage: Storage, p: StatsParams, refresh: int, since: float) -> int:
    """Write to ``pair_changes`` (as ``refresh``) the pairs whose behaviour changed since ``since``
    (seconds, ClickHouse's clock): pairs >= the low tier that a click checkpoint touched since
    (``pair_touched_hashes``, one row per pair and checkpoint), and pairs labelled since. Returns
    how many. Inside ClickHouse (INSERT ... SELECT): the pairs never pass through Python.

    The touched hashes come with a second-resolution time: a pair touched in the second of
    ``since`` is taken again (harmless: scored twice)."""
    span = horizon(storage, p.horizon_days, "pair_counts")
    t = storage.table
    params = {"r": refresh, "since": int(since) - 1, "since_ms": int(since * 1000) - 1000,
              "low": p.low, "lo": span[0].isoformat() if span else "1970-01-01",
              "hi": span[1].isoformat() if span else "1970-01-01"}
    storage.command(
        f"""INSERT INTO {t('pair_changes')} (refresh, item_a, item_b)
            SELECT {{r:UInt64}}, item_a, item_b FROM (
                SELECT item_a, item_b FROM {t('pair_counts')}
                WHERE day >= {{lo:Date}} AND day <= {{hi:Date}} AND pair_hash IN (
                    SELECT pair_hash FROM {t('pair_touched_hashes')}
                    WHERE created_at >= fromUnixTimestamp({{since:Int64}}))
                GROUP BY item_a, item_b HAVING sum(count) >= {{low:UInt64}}
                UNION DISTINCT
                SELECT DISTINCT item_a, item_b FROM {t('pair_labels')}
                WHERE labelled_at >= fromUnixTimestamp64Milli({{since_ms:Int64}}))""", params)
    return int(storage.query_value(f"SELECT count() FROM {t('pair_changes')} WHERE refresh = {{r:UInt64}}",
                                   {"r": refresh}) or 0)


def changed_evidence(storage: Storage, p: StatsParams, refresh: int) -> pa.Table:
    """item_a, item_b, count, users, lift, swing of the pairs ``mark_changes`` wrote as
    ``refresh``: count and lift computed now, with ``refresh``'s definitions (``pair_evidence``'s
    SQL terms, on a table of pairs instead of literal arrays); users and swing as the newest
    ``pair_stats`` version has them (0 where it has none). Those two need the user graph (every
    user's items joined with themselves), which cost most of a refresh when nearly every pair of
    a small catalogue changed (20 of 47 s for 919k pairs) and which the blend does not read."""
    span = horizon(storage, p.horizon_days)
    t = storage.table
    params = {"r": refresh, "lo": span[0].isoformat() if span else "1970-01-01",
              "hi": span[1].isoformat() if span else "1970-01-01"}
    in_horizon = "day >= {lo:Date} AND day <= {hi:Date}"
    changes = f"(SELECT item_a, item_b FROM {t('pair_changes')} WHERE refresh = {{r:UInt64}})"
    items = (f"(SELECT item_a AS item_id FROM {t('pair_changes')} WHERE refresh = {{r:UInt64}} "
             f"UNION ALL SELECT item_b FROM {t('pair_changes')} WHERE refresh = {{r:UInt64}})")
    marginals = marginals_sql(t, in_horizon, f"item_id IN {items}")
    return storage.query_arrow(
        f"""SELECT q.item_a AS item_a, q.item_b AS item_b, c0.count AS count,
                   toUInt32(ifNull(sw.users, 0)) AS users,
                   toFloat32({_lift_sql(p)}) AS lift, toFloat32(ifNull(sw.swing, 0)) AS swing
            FROM {changes} AS q
            LEFT JOIN (SELECT item_a, item_b, sum(count) AS count FROM {t('pair_counts')}
                       WHERE {in_horizon} AND (item_a, item_b) IN {changes} GROUP BY item_a, item_b) AS c0
                ON c0.item_a = q.item_a AND c0.item_b = q.item_b
            LEFT JOIN (SELECT item_id, clicks AS clicks_a FROM {marginals}) AS ma ON ma.item_id = q.item_a
            LEFT JOIN (SELECT item_id, clicks AS clicks_b FROM {marginals}) AS mb ON mb.item_id = q.item_b
            LEFT JOIN (SELECT item_a, item_b, users, swing FROM {t('pair_stats_latest')}
                       WHERE (item_a, item_b) IN {changes}) AS sw
                ON sw.item_a = q.item_a AND sw.item_b = q.item_b
            CROSS JOIN {_total_sql(t, in_horizon)} AS tot
            ORDER BY item_a, item_b
            SETTINGS join_use_nulls = 0""", params)


def half_evidence(storage: Storage, pairs: list[tuple[str, str]], p: StatsParams):
    """Co-click count and lift of the given canonical pairs in each of two disjoint halves of
    the horizon: even and odd UTC day numbers. ((count_0, lift_0), (count_1, lift_1)), arrays
    in the order of ``pairs``; None when either half has no co-clicks.

    The lift of a half uses that half's marginals and total and half the pseudo-count
    (s / 2): with every count halved, (c/2 + s/2) / (e/2 + s/2) shrinks a pair towards 1 as
    much as the full data's (c + s) / (e + s) does. What ``models.blend.fit_evidence_count``
    fits the blend weight on."""
    import numpy as np

    span = horizon(storage, p.horizon_days)
    if span is None or not pairs:
        return None
    t = storage.table
    items = sorted({x for pair in pairs for x in pair})
    params = {"lo": span[0].isoformat(), "hi": span[1].isoformat(), "items": items,
              "a": [a for a, _ in pairs], "b": [b for _, b in pairs]}
    in_horizon = "day >= {lo:Date} AND day <= {hi:Date}"
    half = "toUInt8(toUInt32(day) % 2)"
    totals = dict(storage.query_rows(
        f"SELECT {half} AS half, intDiv(sum(clicks), 2) FROM {t('item_day_clicks')} WHERE {in_horizon} "
        "GROUP BY half", params))
    if not totals.get(0) or not totals.get(1):
        return None
    marginals = {(item, h): n for item, h, n in storage.query_rows(
        "SELECT item_id, part, clicks FROM "
        + marginals_sql(t, in_horizon, "item_id IN {items:Array(String)}", part=half), params)}
    counts = {(a, b, h): n for a, b, h, n in storage.query_rows(
        f"""SELECT item_a, item_b, {half} AS half, sum(count) FROM {t('pair_counts')}
            WHERE {in_horizon} AND (item_a, item_b) IN arrayZip({{a:Array(String)}}, {{b:Array(String)}})
            GROUP BY item_a, item_b, half""", params)}
    prior = float(p.lift_prior) / 2
    out = []
    for h in (0, 1):
        count = np.array([counts.get((a, b, h), 0) for a, b in pairs], np.float64)
        expected = np.array([marginals.get((a, h), 0) * marginals.get((b, h), 0) for a, b in pairs],
                            np.float64) / (2 * totals[h])
        out.append((count, ((count + prior) / (expected + prior)).astype(np.float32)))
    return out[0], out[1]
