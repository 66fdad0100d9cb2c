"""Label sources measured against behaviour on well-evidenced pairs: a source that orders pairs
as behaviour does is worth ~1, one at chance ~0, and only pairs with enough co-clicks count."""

from __future__ import annotations

import random

import numpy as np

from streams.core.storage.label_worth import label_worth, roc_auc
from streams.core.storage.labels import LabelRow, write_labels
from tests.tables import insert_pair_stats


def test_a_source_that_follows_behaviour_is_worth_much_and_one_at_chance_nothing(storage):
    rng = random.Random(4)
    pairs = [(f"a{k:03d}", f"b{k:03d}") for k in range(120)]
    fits = [k % 2 == 0 for k in range(120)]
    lifts = [8.0 if fit else 0.5 for fit in fits]
    counts = [40] * 100 + [2] * 20  # the last 20 are too thin to judge anything by
    insert_pair_stats(storage, pairs, lifts, counts)
    rows = []
    for (a, b), fit in zip(pairs, fits):
        rows.append(LabelRow(a, b, 8.0 if fit else 2.0, "medium", "llm", "openai", "m", "v1"))  # agrees
        rows.append(LabelRow(a, b, float(rng.randint(1, 10)), "medium", "heuristic", "heuristic", "", "v1"))
        rows.append(LabelRow(a, b, 9.0 if fit else 1.0, "high", "behaviour", "none", "", ""))
    write_labels(storage, rows)
    report = label_worth(storage, min_count=20)
    llm, heuristic, behaviour = (report["sources"][s] for s in ("llm", "heuristic", "behaviour"))
    assert llm["n"] == 100 and llm["behaviour_positives"] == 50  # thin pairs left out
    assert llm["auc"] == 1.0 and llm["worth"] == 1.0
    assert heuristic["worth"] < 0.25 and abs(heuristic["auc"] - 0.5) < 0.15
    assert behaviour["circular"] and not llm["circular"]
    assert label_worth(storage, min_count=1000)["sources"] == {}


def test_roc_auc_counts_ties_half():
    assert roc_auc([True, False], [1.0, 0.0]) == 1.0
    assert roc_auc([True, False, True, False], [5.0, 5.0, 5.0, 5.0]) == 0.5
    assert np.isnan(roc_auc([True, True], [1.0, 2.0]))


def test_labels_quality_prints_the_worth_of_each_source(capsys):
    """What `pairstream labels quality` prints from a report: each source's worth, the ones at
    chance and the circular one said in words, and the gold section's hint when there is none."""
    from streams.cli.labels import _print_quality

    report = {"gold_pairs": 0, "compatible_at": 5.5, "sources": {}, "behaviour": {"min_count": 20, "sources": {
        "behaviour": {"n": 9, "behaviour_positives": 4, "auc": 1.0, "worth": 1.0, "circular": True},
        "heuristic": {"n": 9, "behaviour_positives": 4, "auc": 0.48, "worth": 0.0, "circular": False},
        "llm": {"n": 9, "behaviour_positives": 4, "auc": 0.9, "worth": 0.8, "circular": False}}}}
    assert _print_quality(report, as_json=False) == 0
    out, err = capsys.readouterr()
    assert "heuristic                9         4  0.480  0.000  (at chance: worth nothing)" in out
    assert "(circular: derived from lift)" in out and "llm                      9         4  0.900  0.800\n" in out
    assert "no gold set yet" in err
