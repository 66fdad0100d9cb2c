"""Reference computation of the pair-count semantics, independent of ``streams.ingest.sessions``.

Deliberately naive (a list per user, re-sorted on every event): it is the oracle that the
tests and ``bench ingest`` compare ClickHouse against, so it shares no code with the fast path.
Events are processed per partition in offset order, as the stream does.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping


def reference_counts(
    clicks: Iterable[tuple[str, str, float]],
    categories: Mapping[str, str],
    window_s: float = 1800,
    history_size: int = 20,
) -> Counter:
    """``Counter[(item_a, item_b, utc_day)]`` for clicks given as (user, item, ts) in order."""
    histories: dict[str, list[list]] = {}
    out: Counter = Counter()
    for user, item, ts in clicks:
        history = histories.setdefault(user, [])
        cat = categories.get(item)
        for other, other_ts in history:
            if other == item or abs(ts - other_ts) > window_s:
                continue
            other_cat = categories.get(other)
            if cat is None or other_cat is None or cat == other_cat:
                continue
            a, b = sorted((item, other))
            out[(a, b, int(ts // 86400))] += 1
        for entry in history:
            if entry[0] == item:
                entry[1] = max(entry[1], ts)
                break
        else:
            history.append([item, ts])
        history.sort(key=lambda e: (e[1], e[0]), reverse=True)
        del history[history_size:]
    return out


def reference_visits(clicks: Iterable[tuple[str, str, float]]) -> Counter:
    """``Counter[(user, item, utc_day)]``: the contract of ``user_item_days``."""
    return Counter((user, item, int(ts // 86400)) for user, item, ts in clicks)


def reference_stats(visits: Mapping[tuple[str, str, int], int], counts: Mapping[tuple[str, str, int], int],
                    params, extra_pairs: Iterable[tuple[str, str]] = ()) -> dict[tuple[str, str], dict]:
    """Behaviour statistics per candidate pair, written from the definitions in
    ``streams.core.storage.stats`` with sets and loops (no SQL, no shared code)."""
    import math

    if not visits:
        return {}
    last = max(day for _, _, day in visits)
    first = last - params.horizon_days + 1
    last_day: dict[tuple[str, str], int] = {}
    for (user, item, day), _ in visits.items():
        if first <= day <= last:
            last_day[(user, item)] = max(day, last_day.get((user, item), day))
    users_of: dict[str, set] = {}
    for user, item in last_day:
        users_of.setdefault(item, set()).add(user)
    # Swing's capped graph
    items_of: dict[str, set] = {}
    for user, item in last_day:
        items_of.setdefault(user, set()).add(item)
    light = {u for u, its in items_of.items() if len(its) <= params.swing_max_user_items}
    capped_users: dict[str, set] = {}
    for item, users in users_of.items():
        ranked = sorted((u for u in users if u in light), key=lambda u: (-last_day[(u, item)], u))
        capped_users[item] = set(ranked[:params.swing_max_item_users])
    capped_items: dict[str, set] = {}
    for item, users in capped_users.items():
        for user in users:
            capped_items.setdefault(user, set()).add(item)

    totals: Counter = Counter()
    decayed: dict[tuple[str, str], float] = {}
    for (a, b, day), n in counts.items():
        if first <= day <= last:
            totals[(a, b)] += n
            weight = 0.5 ** ((last - day) / params.half_life_days) if params.half_life_days > 0 else 1.0
            decayed[(a, b)] = decayed.get((a, b), 0.0) + n * weight
    pairs = {pair for pair, n in totals.items() if n >= params.low} | set(extra_pairs)
    marginal: Counter = Counter()
    for (a, b), n in totals.items():
        marginal[a] += n
        marginal[b] += n
    total = sum(totals.values())
    out = {}
    for a, b in pairs:
        ua, ub = users_of.get(a, set()), users_of.get(b, set())
        both = len(ua & ub)
        expected = marginal[a] * marginal[b] / max(2 * total, 1)
        lift = (totals.get((a, b), 0) + params.lift_prior) / (expected + params.lift_prior)
        swing = 0.0
        common = sorted(capped_users.get(a, set()) & capped_users.get(b, set()))
        for i, u in enumerate(common):
            for v in common[i + 1:]:
                w_u = (len(capped_items[u]) + params.swing_user_offset) ** -params.swing_user_power
                w_v = (len(capped_items[v]) + params.swing_user_offset) ** -params.swing_user_power
                swing += w_u * w_v / (params.swing_alpha + len(capped_items[u] & capped_items[v]))
        out[(a, b)] = {
            "count": totals.get((a, b), 0), "decayed_count": decayed.get((a, b), 0.0),
            "users": both, "users_a": len(ua), "users_b": len(ub), "lift": lift,
            "pmi": math.log(lift), "jaccard": both / max(len(ua) + len(ub) - both, 1), "swing": swing,
        }
    return out
