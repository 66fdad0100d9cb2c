"""Label sources weigh what they are worth: a source that orders pairs as behaviour does keeps
its weight in training, one at chance (the heuristic on an unfamiliar marketplace) drops to ~0."""

from __future__ import annotations

import random

from streams.core.events import Item
from streams.core.storage.labels import LabelRow, write_labels
from streams.ingest.catalogue import Catalogue
from tests.streams.core.test_label_worth import _stats
from training.dataset import WORTH_FLOOR, load_labelled, worth_weights


def test_a_source_at_chance_weighs_almost_nothing_in_training(storage):
    rng = random.Random(2)
    llm_pairs = [(f"a{k:03d}", f"b{k:03d}") for k in range(100)]
    rule_pairs = [(f"c{k:03d}", f"d{k:03d}") for k in range(100)]
    fits = [k % 2 == 0 for k in range(100)]
    _stats(storage, llm_pairs + rule_pairs, [8.0 if f else 0.5 for f in fits] * 2, [40] * 200)
    Catalogue().upsert(storage, [Item(x, "c1" if x[0] in "ac" else "c2", f"item {x}")
                                 for pair in llm_pairs + rule_pairs for x in pair])
    write_labels(storage, [LabelRow(a, b, 8.0 if f else 2.0, "medium", "llm", "openai", "m", "v1")
                           for (a, b), f in zip(llm_pairs, fits)])
    write_labels(storage, [LabelRow(a, b, float(rng.randint(1, 10)), "medium", "heuristic", "heuristic", "", "v1")
                           for a, b in rule_pairs])
    weights = worth_weights(storage, min_count=20)
    assert weights["llm"] == 1.0 and WORTH_FLOOR <= weights["heuristic"] < 0.25
    examples = load_labelled(storage, source_weights=weights)
    by_source = {source: [e.weight for e in examples if e.source == source] for source in ("llm", "heuristic")}
    assert len(by_source["llm"]) == len(by_source["heuristic"]) == 100
    assert set(by_source["llm"]) == {1.0} and set(by_source["heuristic"]) == {weights["heuristic"]}
    # unmeasured (too few well-evidenced pairs): nothing reweighted
    assert worth_weights(storage, min_count=1000) == {} and worth_weights(storage, min_count=0) == {}
