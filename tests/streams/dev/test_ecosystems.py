"""The brand-ecosystem marketplace: fit lives in two structured fields, never in the title, and
behaviour carries it only through noise (brand-loyal browsing co-clicks same-brand misfits)."""

from __future__ import annotations

import itertools
from collections import Counter

from streams.dev import ecosystems


def test_the_generator_is_deterministic_and_its_fit_is_in_the_fields_not_the_title():
    items, clicks, truth = ecosystems.generate(400, 300, 6000, seed=5)
    again = ecosystems.generate(400, 300, 6000, seed=5)
    assert (items, clicks) == again[:2] and len(clicks) == 6000
    assert [c.ts for c in clicks] == sorted(c.ts for c in clicks)
    for item in items:
        fact = truth[item.item_id]
        assert item.model == fact.generation and item.brand == fact.brand
        assert fact.generation not in item.title  # the fit is never written in the title
        assert "/" in item.category  # two-level category paths
    by_id = {i.item_id: i for i in items}
    devices = [i for i in items if truth[i.item_id].kind in ecosystems.DEVICES]
    accessories = [i for i in items if truth[i.item_id].kind in ecosystems.ACCESSORIES]
    related = [(d, a) for d in devices for a in accessories if ecosystems.related(truth[d.item_id], truth[a.item_id])]
    fits = [(d, a) for d, a in related if ecosystems.truth_compatible(truth[d.item_id], truth[a.item_id])]
    assert 0.05 < len(fits) / len(related) < 0.6  # fit is the minority among related pairs
    # a brand match alone is not fit: same-brand, different-generation pairs are misfits
    assert any(d.brand == a.brand and d.model != a.model and a.model != ecosystems.UNIVERSAL
               and not ecosystems.truth_compatible(truth[d.item_id], truth[a.item_id]) for d, a in related)
    assert by_id  # the truth covers every item
    assert set(truth) == set(by_id)


def test_co_clicks_favour_fit_but_also_hold_misfits():
    items, clicks, truth = ecosystems.generate(300, 2000, 40000, seed=7)
    sessions: dict = {}
    for c in clicks:
        sessions.setdefault(c.user_id, []).append(c)
    together: Counter = Counter()
    for user_clicks in sessions.values():
        for a, b in itertools.combinations(sorted({c.item_id for c in user_clicks}), 2):
            together[a, b] += 1
    related = [(p, n) for p, n in together.items() if ecosystems.related(truth[p[0]], truth[p[1]])]
    fit = [n for p, n in related if ecosystems.truth_compatible(truth[p[0]], truth[p[1]])]
    misfit = [n for p, n in related if not ecosystems.truth_compatible(truth[p[0]], truth[p[1]])]
    assert fit and misfit
    assert sum(fit) / len(fit) > 1.2 * sum(misfit) / len(misfit)
