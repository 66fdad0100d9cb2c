"""Label sources weigh what they are worth: a source that orders pairs as behaviour does keeps
its weight in training, one at chance (the heuristic on an unfamiliar marketplace) drops to ~0."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa

from streams.core.events import Item
from streams.core.storage.labels import LabelRow, write_labels
from streams.ingest.catalogue import Catalogue
from tests.tables import insert_pair_stats
from training.dataset import (
    HARD_NEGATIVE_SOURCE,
    WORTH_FLOOR,
    PairExample,
    hard_negatives,
    load_labelled,
    split_of,
    worth_weights,
)


def test_a_source_at_chance_weighs_almost_nothing_in_training(storage):
    rng = random.Random(2)
    llm_pairs = [(f"a{k:03d}", f"b{k:03d}") for k in range(100)]
    rule_pairs = [(f"c{k:03d}", f"d{k:03d}") for k in range(100)]
    fits = [k % 2 == 0 for k in range(100)]
    insert_pair_stats(storage, llm_pairs + rule_pairs, [8.0 if f else 0.5 for f in fits] * 2, [40] * 200)
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


def _clicks(storage, pairs: dict[tuple[str, str], int], reach: dict[str, int]) -> None:
    """pair_counts rows, and ``reach[item]`` distinct users for each item."""
    day = pa.array([20000] * len(pairs), pa.int32()).cast(pa.date32())
    storage.insert_arrow("pair_counts", pa.table({
        "item_a": [a for a, _ in pairs], "item_b": [b for _, b in pairs], "day": day,
        "count": pa.array(list(pairs.values()), pa.uint64())}))
    visits = [(f"u{k}", item) for item, n in reach.items() for k in range(n)]
    storage.insert_arrow("user_item_days", pa.table({
        "user_id": [u for u, _ in visits], "item_id": [i for _, i in visits],
        "day": pa.array([20000] * len(visits), pa.int32()).cast(pa.date32()),
        "clicks": pa.array([1] * len(visits), pa.uint64())}))


def test_hard_negatives_are_visible_same_category_partners_nobody_co_clicked(storage):
    # phones p0..p9 (c1); cases: k* co-clicked with their phone, x* as widely clicked but never
    # with it, q* barely clicked (too obscure to say anything), s* in another category
    phones = [f"p{k}" for k in range(10)]
    Catalogue().upsert(storage, [Item(p, "c1", f"phone {p}") for p in phones]
                       + [Item(f"{x}{k}", "c2" if x != "s" else "c3", f"case {x}{k}")
                          for x in "kxqs" for k in range(10)])
    co_clicked = {(f"k{k}", f"p{k}"): 30 for k in range(10)}
    _clicks(storage, co_clicked, {**{f"{x}{k}": 40 for x in "kxs" for k in range(10)},
                                  **{f"q{k}": 2 for k in range(10)}, **{p: 60 for p in phones}})
    positives = [PairExample(a, b, "", "", np.zeros(10, np.float32), 9.0, 0.8, split_of(a, b), "behaviour")
                 for a, b in co_clicked]
    positives += [PairExample("k0", "k1", "", "", np.zeros(10, np.float32), 3.0, 1.0, "train", "behaviour")]
    negatives = hard_negatives(storage, positives, per_positive=2, seed=1)
    train_positives = [e for e in positives if e.split == "train" and e.label >= 7]
    assert negatives and len(negatives) <= 4 * len(train_positives)
    for e in negatives:
        assert e.source == HARD_NEGATIVE_SOURCE and e.split == "train" == split_of(e.item_a, e.item_b)
        assert e.label == 1.0 and int(np.argmax(e.target)) == 0 and e.weight == 0.8
        assert (e.item_a, e.item_b) not in co_clicked and e.text_a and e.text_b
        a, b = e.item_a, e.item_b
        # a phone with a widely clicked case, or a case with another phone: never the
        # obscure cases, the other category, or the weak positive's anchors
        assert {a[0], b[0]} in ({"p", "x"}, {"p", "k"}), (a, b)
    assert hard_negatives(storage, positives, per_positive=0) == []


def test_a_rule_worth_its_salt_keeps_its_labels_beside_behaviour_in_training(storage):
    """Behaviour labels replace rule labels; a rule measured worth at least
    ``KEEP_BESIDE_BEHAVIOUR_WORTH`` keeps its label beside behaviour's in the train split (fit in
    fields a rule reads, co-clicks blurred by brand-loyal browsing), never in the held-out ones."""
    from training.dataset import KEEP_BESIDE_BEHAVIOUR_WORTH

    pairs = [(f"a{k:03d}", f"b{k:03d}") for k in range(60)]
    insert_pair_stats(storage, pairs, [8.0] * 60, [40] * 60)
    Catalogue().upsert(storage, [Item(x, "c1", f"item {x}") for pair in pairs for x in pair])
    write_labels(storage, [LabelRow(a, b, 3.0, "medium", "heuristic", "heuristic", "", "v1") for a, b in pairs])

    def sources(weight: float) -> dict:
        examples = load_labelled(storage, behaviour_min_count=3, source_weights={"heuristic": weight})
        out: dict = {}
        for e in examples:
            out.setdefault((e.item_a, e.item_b), []).append((e.source, e.weight))
        return out

    worthy = sources(KEEP_BESIDE_BEHAVIOUR_WORTH)
    for (a, b), labels in worthy.items():
        kinds = sorted(source for source, _ in labels)
        assert kinds == (["behaviour", "heuristic"] if split_of(a, b) == "train" else ["behaviour"]), (a, b)
        assert dict(labels).get("heuristic", KEEP_BESIDE_BEHAVIOUR_WORTH) == KEEP_BESIDE_BEHAVIOUR_WORTH
    assert any(len(labels) == 2 for labels in worthy.values())
    at_chance = sources(0.1)
    assert all([source for source, _ in labels] == ["behaviour"] for labels in at_chance.values())
