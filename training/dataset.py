"""Training pairs from ``pair_labels`` (effective labels) joined with the items' text.

- Split by pair, deterministically: sha1 of "a|b" -> train / val / test, so a pair never
  sits in two splits and a relabelled pair stays where it was.
- Soft targets: the LLM's own distribution where the backend stored one (the rubric-weighted
  mixture of the five dimensions' distributions), otherwise a Gaussian around the label
  (sigma ``label_sigma`` bins): a 7 also says "6 or 8 is not far off".
- Weights: manual labels count ``manual_weight`` times (a person checked them); every other
  source counts what it is worth against behaviour (``worth_weights``).
- Behaviour labels (lift, where co-clicks are enough) replace rule labels, except in the train
  split where the rule was measured worth ``KEEP_BESIDE_BEHAVIOUR_WORTH``: both stay there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from models.rubric import load_rubric
from models.scale import SCORE_BINS
from models.text import item_text


@dataclass
class PairExample:
    item_a: str
    item_b: str
    text_a: str
    text_b: str
    target: np.ndarray  # 10 probabilities
    label: float | None  # the 1..10 label; None for teacher-augmented rows
    weight: float
    split: str
    source: str
    fields_a: dict = field(default_factory=dict)  # the catalogue row (teacher input); may be empty
    fields_b: dict = field(default_factory=dict)


def split_of(item_a: str, item_b: str, val: float = 0.1, test: float = 0.1) -> str:
    bucket = int(hashlib.sha1(f"{item_a}|{item_b}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test else "val" if bucket < test + val else "train"


def smoothed(label: float, sigma: float = 1.0) -> np.ndarray:
    bins = np.asarray(SCORE_BINS, np.float64)
    p = np.exp(-0.5 * ((bins - label) / sigma) ** 2)
    return (p / p.sum()).astype(np.float32)


def catalogue_example(items: dict[str, dict], a: str, b: str, target: np.ndarray, label: float | None,
                      weight: float, split: str, source: str) -> PairExample:
    """A pair built from its two catalogue rows: the students' texts and the teacher's fields."""
    return PairExample(a, b, item_text(items[a]), item_text(items[b]), target, label, weight, split,
                       source, items[a], items[b])


# label sources that a behaviour-derived label replaces: rules and blanket defaults, which do
# not look at the pair the way an LLM or a person does ...
YIELDS_TO_BEHAVIOUR = ("heuristic", "default")
# ... unless the source was measured worth at least this much against behaviour
# (``worth_weights``): then its label stays beside the behaviour one, each at its weight. Where
# fit lives in fields a rule reads, the rule sees what co-clicks blur (brand-loyal browsing
# co-clicks same-brand misfits); where it is at chance it still gives way
KEEP_BESIDE_BEHAVIOUR_WORTH = 0.5


def behaviour_rows(storage, min_count: int, evidence_count: float) -> list[dict]:
    """Label-shaped rows from the newest ``pair_stats``: score = the blend's behaviour score of
    the pair's lift, weight = its evidence weight (``models.blend``)."""
    from models.blend import behaviour_score, evidence_weight

    if min_count <= 0:
        return []
    stats = storage.query_arrow(
        f"SELECT item_a, item_b, count, lift FROM {storage.table('pair_stats_latest')} "
        "WHERE count >= {n:UInt64}", {"n": min_count})
    if not stats.num_rows:
        return []
    count = stats.column("count").to_numpy()
    scores = behaviour_score(stats.column("lift").to_numpy())
    weights = evidence_weight(count, evidence_count)
    return [{"item_a": a, "item_b": b, "score": float(s), "source": "behaviour", "weight": float(w),
             "dim_dists": {}} for a, b, s, w in zip(stats.column("item_a").to_pylist(),
                                                     stats.column("item_b").to_pylist(), scores, weights)]


WORTH_FLOOR = 0.02  # a source at chance still counts a little: never a division of nothing
WORTH_MIN_PAIRS = 30  # a source measured on fewer well-evidenced pairs keeps weight 1 (not measured)


def worth_weights(storage, min_count: int) -> dict[str, float]:
    """Training weight per label source: what it is worth against behaviour on well-evidenced
    pairs (``streams.core.storage.label_worth``), floored at ``WORTH_FLOOR``; sources measured on
    fewer than ``WORTH_MIN_PAIRS`` pairs, manual and behaviour (circular) are not reweighted."""
    from streams.core.storage.label_worth import label_worth

    if min_count <= 0:
        return {}
    out = {}
    for source, entry in label_worth(storage, min_count)["sources"].items():
        if entry["circular"] or source == "manual" or entry["worth"] is None or entry["n"] < WORTH_MIN_PAIRS:
            continue
        out[source] = max(float(entry["worth"]), WORTH_FLOOR)
    return out


def load_labelled(storage, manual_weight: float = 3.0, label_sigma: float = 1.0,
                  rubric_path: str = "", behaviour_min_count: int = 0,
                  behaviour_evidence_count: float = 5.0,
                  source_weights: dict[str, float] | None = None) -> list[PairExample]:
    """Labelled pairs as examples; ``source_weights`` (``worth_weights``) scales each label by
    what its source is worth."""
    from streams.core.storage.items import products
    from streams.core.storage.labels import effective_labels

    weights = load_rubric(rubric_path).weights()
    rows = effective_labels(storage)
    behaviour = behaviour_rows(storage, behaviour_min_count, behaviour_evidence_count)
    if behaviour:
        worthy = {s for s, w in (source_weights or {}).items() if w >= KEEP_BESIDE_BEHAVIOUR_WORTH}

        def yields(row: dict) -> bool:  # held-out pairs keep one label: behaviour's
            return row["source"] in YIELDS_TO_BEHAVIOUR and (
                row["source"] not in worthy or split_of(row["item_a"], row["item_b"]) != "train")

        keep = {(r["item_a"], r["item_b"]) for r in rows if r["source"] not in YIELDS_TO_BEHAVIOUR}
        replaced = {(r["item_a"], r["item_b"]) for r in behaviour} - keep
        rows = [r for r in rows if (r["item_a"], r["item_b"]) not in replaced or not yields(r)] + \
               [r for r in behaviour if (r["item_a"], r["item_b"]) in replaced]
    items = products(storage, sorted({r["item_a"] for r in rows} | {r["item_b"] for r in rows}))
    out = []
    for row in rows:
        a, b = row["item_a"], row["item_b"]
        if a not in items or b not in items:
            continue  # an item left the catalogue
        dists = row["dim_dists"]
        if dists and set(dists) >= set(weights):
            mixed = np.sum([weights[d] * np.asarray(dists[d], np.float64) for d in weights], axis=0)
            target = (mixed / mixed.sum()).astype(np.float32)
        else:
            target = smoothed(float(row["score"]), label_sigma)
        weight = manual_weight if row["source"] == "manual" else row.get("weight", 1.0)
        weight *= (source_weights or {}).get(row["source"], 1.0)
        out.append(catalogue_example(items, a, b, target, float(row["score"]), weight,
                                     split_of(a, b), row["source"]))
    return sorted(out, key=lambda e: (e.item_a, e.item_b))


def candidate_pairs(storage, exclude: set[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    """Unlabelled pairs from ``pair_counts`` (any tier), most frequent first."""
    if limit <= 0:
        return []
    rows = storage.query_rows(
        f"SELECT item_a, item_b, sum(count) AS n FROM {storage.table('pair_counts')} "
        "GROUP BY item_a, item_b ORDER BY n DESC, item_a, item_b LIMIT {lim:UInt64}",
        {"lim": limit + len(exclude)})
    out = [(a, b) for a, b, _ in rows if (a, b) not in exclude]
    return out[:limit]


HARD_NEGATIVE_SOURCE = "hard_negative"


def hard_negatives(storage, positives: list[PairExample], per_positive: int, seed: int = 0,
                   min_label: float = 7.0, visibility: float = 0.5) -> list[PairExample]:
    """Behaviour's misfits: for a pair behaviour says goes together (label >= ``min_label``),
    partners of the same category as either side, at least ``visibility`` times as widely
    clicked as the real partner, that nobody co-clicked with the anchor.

    Why: a case that fits a phone and one that does not share a category, price range and
    most words; what tells them apart is the few tokens (a size, a mount, a generation) that
    behaviour shows going together. A partner as visible as one people co-click with the
    anchor, yet never co-clicked with it, is most likely a misfit, so these pairs teach the
    students to read those tokens where plain behaviour labels mostly teach "accessory of a
    device". Only the train split gets them (val and test stay behaviour's own labels)."""
    import random

    from streams.core.storage.items import products

    strong = [e for e in positives if e.split == "train" and e.label is not None and e.label >= min_label]
    if per_positive <= 0 or not strong:
        return []
    anchors = sorted({x for e in strong for x in (e.item_a, e.item_b)})
    reach = dict(storage.query_rows(
        f"SELECT item_id, uniqExact(user_id) FROM {storage.table('user_item_days')} GROUP BY item_id"))
    seen = set(storage.query_rows(
        f"SELECT DISTINCT item_a, item_b FROM {storage.table('pair_counts')} "
        "WHERE item_a IN {ids:Array(String)} OR item_b IN {ids:Array(String)}", {"ids": anchors}))
    catalogue = products(storage, sorted(reach))
    by_category: dict[str, list[str]] = {}
    for item_id in sorted(catalogue):  # a fixed order (query rows come in any): same draw every run
        by_category.setdefault(catalogue[item_id]["category"], []).append(item_id)
    rng = random.Random(seed)
    out: dict[tuple[str, str], PairExample] = {}
    target = smoothed(1.0)
    for e in strong:
        for anchor, partner in ((e.item_a, e.item_b), (e.item_b, e.item_a)):
            if partner not in catalogue or anchor not in catalogue:
                continue
            floor = visibility * reach.get(partner, 0)
            pool = [x for x in by_category.get(catalogue[partner]["category"], ())
                    if x != anchor and x != partner and reach.get(x, 0) >= floor]
            rng.shuffle(pool)
            taken = 0
            for other in pool:
                if taken >= per_positive:
                    break
                a, b = min(anchor, other), max(anchor, other)
                if (a, b) in seen or (a, b) in out or split_of(a, b) != "train":
                    continue
                out[a, b] = catalogue_example(catalogue, a, b, target, 1.0, e.weight, "train",
                                              HARD_NEGATIVE_SOURCE)
                taken += 1
    return sorted(out.values(), key=lambda x: (x.item_a, x.item_b))
