"""The label quality loop: sources against the manual gold set, and the review queue."""

from __future__ import annotations

import json

import pytest

from models.runtime import Students
from streams.core.config import Settings
from streams.core.storage.labels import LabelRow, write_labels
from streams.labelling.quality import cohen_kappa, gold_report, review_queue
from streams.publishing.publisher import publish
from tests.student_fixtures import seed_pairs, tiny_students


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items: both yes 20, a yes b no 5, a no b yes 10, both no 15 -> kappa 0.4
    a = [True] * 20 + [True] * 5 + [False] * 10 + [False] * 15
    b = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([True, False], [True, False]) == 1.0


def test_gold_report_and_review_queue(storage, settings, tmp_path):
    data = seed_pairs(storage)
    students = tiny_students(storage, tmp_path, seed=0)
    publish(storage, settings, Students(students["version"], students["artifacts"]), progress=False)
    frequent = sorted(p for p, c in zip(data["pairs"], data["counts"]) if c >= 3 and p != data["manual"])
    gold, rest = frequent[:8], frequent[8:14]
    truth = [9, 9, 8, 2, 2, 1, 1, 1]  # people said: three go together, five do not
    llm = [8, 3, 9, 2, 1, 6, 1, 2]   # the LLM agrees on 6 of 8
    write_labels(storage, [LabelRow(a, b, s, "medium", "manual", "manual", "", "",
                                    dim_scores={"category": s}) for (a, b), s in zip(gold, truth)])
    write_labels(storage, [LabelRow(a, b, s, "medium", "llm", "openai", "m", "v1",
                                    dim_scores={"category": s, "colour": 5.0}) for (a, b), s in zip(gold, llm)])
    write_labels(storage, [LabelRow(a, b, 10.0, "medium", "heuristic", "heuristic", "", "v1")
                           for a, b in gold[:4] + rest])

    report = gold_report(storage)
    assert report["gold_pairs"] == 9  # the eight above and seed_pairs' own manual label
    llm_entry = report["sources"]["llm"]
    g = [s >= 5.5 for s in truth]
    o = [s >= 5.5 for s in llm]
    assert llm_entry["n"] == 8 and llm_entry["accuracy"] == pytest.approx(6 / 8, abs=1e-3)
    assert llm_entry["kappa"] == pytest.approx(cohen_kappa(g, o), abs=1e-3)
    assert llm_entry["mae"] == pytest.approx(sum(abs(x - y) for x, y in zip(truth, llm)) / 8, abs=1e-3)
    assert llm_entry["dimensions"]["category"]["n"] == 8 and "colour" not in llm_entry["dimensions"]
    assert report["sources"]["heuristic"]["n"] == 4 and report["sources"]["heuristic"]["kappa"] < 0.5
    for published_source in ("published", "model", "behaviour_evidence"):
        assert report["sources"][published_source]["n"] == 9  # every gold pair is published

    queue = review_queue(storage, limit=50)
    reviewed = set(gold) | {data["manual"]}
    assert queue and not {(e["item_a"], e["item_b"]) for e in queue} & reviewed  # gold is done
    assert {(e["item_a"], e["item_b"]) for e in queue} >= set(rest)
    assert [e["impact"] for e in queue] == sorted((e["impact"] for e in queue), reverse=True)
    for entry in queue:
        spread = max(entry["opinions"].values()) - min(entry["opinions"].values())
        assert entry["spread"] == pytest.approx(spread, abs=0.02)
        want = {"medium": "LLM, then manual check", "low": "few-shot LLM"}[entry["tier"]]
        assert entry["seed_review"] == want  # what the seed asks people to do per tier
    json.dumps(queue)  # what `labels review --json` prints


class _Flaky:
    """A backend sure of every dimension but colour: asked about a pair's colour it says 3,
    asked again 8, then 3 ..."""

    name, model_name = "flaky", ""

    def __init__(self):
        self.asked: dict = {}

    async def score(self, request):
        from models.reply import DimensionReply

        if request.dimension != "colour":
            return DimensionReply(7.0, "steady")
        key = request.product_a["item_id"]
        self.asked[key] = self.asked.get(key, 0) + 1
        return DimensionReply(3.0 if self.asked[key] % 2 else 8.0, "flips")

    async def close(self):
        pass


def test_self_consistency_finds_the_dimension_a_backend_flips_on():
    import asyncio

    from models.rubric import load_rubric
    from models.scorer import PairScorer
    from streams.labelling.consistency import self_consistency
    from streams.labelling.labeller import build_scorer

    pairs = [({"item_id": f"a{k}", "title": f"phone {k}", "category": "phones"},
              {"item_id": f"b{k}", "title": f"case {k}", "category": "cases"}) for k in range(6)]
    flaky = asyncio.run(self_consistency(PairScorer(load_rubric(), _Flaky()), pairs, repeats=2))
    colour, brand = flaky["dimensions"]["colour"], flaky["dimensions"]["brand"]
    assert flaky["pairs"] == 6 and flaky["failed"] == 0
    # each pair's colour: 3 in the first repeat, 8 in the second
    assert colour == {"n": 6, "exact": 0.0, "mean_abs_diff": 5.0, "kappa": 0.0}  # no better than chance
    assert brand == {"n": 6, "exact": 1.0, "mean_abs_diff": 0.0, "kappa": 1.0}
    assert flaky["overall"]["exact"] == 0.0  # the weighted score moves with colour

    # the heuristic rules are deterministic: the same labels every time
    heuristic = asyncio.run(self_consistency(build_scorer(Settings()), pairs, repeats=3))
    assert heuristic["backend"] == "heuristic" and heuristic["overall"]["exact"] == 1.0
    assert all(d["mean_abs_diff"] == 0.0 for d in heuristic["dimensions"].values())
    with pytest.raises(ValueError):
        asyncio.run(self_consistency(build_scorer(Settings()), pairs, repeats=1))


def test_review_shows_both_products_and_one_key_sets_the_label(storage, settings, tmp_path, capsys, monkeypatch):
    """``labels review``: a card per pair with both products' fields side by side and every
    opinion; ``--interactive`` turns a key into a manual label (0 = 10), skips on s, stops on q."""
    import io
    from types import SimpleNamespace

    from streams.cli.labels import _review as labels_review
    from streams.core.storage.items import products
    from streams.core.storage.labels import effective_labels

    seed_pairs(storage)
    students = tiny_students(storage, tmp_path, seed=0)
    publish(storage, settings, Students(students["version"], students["artifacts"]), progress=False)
    queue = review_queue(storage, limit=3)
    assert len(queue) == 3

    def cli(interactive=False):
        args = SimpleNamespace(action="review", limit=3, json=False, interactive=interactive)
        assert labels_review(storage, args) == 0  # what `pairstream labels review` runs
        return capsys.readouterr().out

    shown = cli()
    first = queue[0]
    names = products(storage, [first["item_a"], first["item_b"]])
    for item in (first["item_a"], first["item_b"]):
        assert item in shown and names[item]["title"] in shown and names[item]["category"] in shown
    opinions = " · ".join(f"{k} {v:.1f}" for k, v in first["opinions"].items())
    assert "[1/3]" in shown and "[3/3]" in shown and f"opinions: {opinions}" in shown and "users" in shown

    monkeypatch.setattr("sys.stdin", io.StringIO("0\ns\nq\n"))  # 10 for the first, skip, quit
    printed = cli(interactive=True)
    assert "1 labelled, 1 skipped (quit)" in printed
    manual = {(r["item_a"], r["item_b"]): r for r in effective_labels(storage, "source = 'manual'")}
    assert manual[(first["item_a"], first["item_b"])]["score"] == 10.0
    reason = dict(manual[(first["item_a"], first["item_b"])]["dim_reasons"])["all"]
    assert reason == f"review queue; overrode {opinions.replace(' · ', ', ')}"
    assert (queue[1]["item_a"], queue[1]["item_b"]) not in manual
    assert (first["item_a"], first["item_b"]) not in {(e["item_a"], e["item_b"]) for e in review_queue(storage, 10)}
