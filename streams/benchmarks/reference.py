"""Reference computation of the pair-count semantics, independent of ``streams.pairing``.

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
