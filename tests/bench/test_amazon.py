"""The Amazon Magazine data is found where the project keeps it: ``../shared/data`` beside the
checkout. Moving the benchmarks to ``bench/`` once pointed the path one folder too high, and
``bench quality --dataset amazon-magazine`` said "skipped" for rounds without anyone noticing."""

from __future__ import annotations

import pytest

from bench import amazon
from tests.paths import REPO_ROOT


def test_the_data_is_looked_for_beside_the_checkout():
    assert amazon.DEFAULT_DIR == REPO_ROOT.parent / "shared" / "data" / "amazon_magazine_2018"


@pytest.mark.skipif(not amazon.available(), reason="../shared/data is not beside this checkout")
def test_the_reviews_load_as_sessions_with_also_buy_as_truth():
    items, clicks, compatible = amazon.load()
    ids = {item.item_id for item in items}
    assert len(items) > 100 and len(clicks) > 1000 and compatible
    assert {click.item_id for click in clicks} <= ids
    assert all(a < b and a in ids and b in ids for a, b in compatible)
    assert [c.ts for c in clicks] == sorted(c.ts for c in clicks)
