"""The label quality loop: manual labels as the gold set, and a review queue of disagreements.

Why: every score the project publishes is only as good as the labels it learned from, and the
backends that produce labels (LLM, the ``heuristic`` rules, behaviour, the old blanket default)
are never right by construction. The seed system's answer is people: high-tier pairs get a
manual check, medium ones an LLM then a manual check, low ones few-shot LLM. This module
measures each source against what people said (``gold_report``) and tells people where to
look first (``review_queue``).

- **Gold set**: the pairs with a manual label (``pairstream labels set``). On them each
  source (every label source in ``pair_labels`` plus the live published ``score`` and its
  ``model_score`` / ``behaviour_score`` from ``pair_scores_latest``) gets: n, mean absolute
  error, accuracy and Cohen's kappa (Cohen 1960) on the binary verdict "goes together" =
  score >= ``COMPATIBLE_AT`` (the middle of 1..10). Kappa discounts the agreement two raters
  reach by chance, which matters when most pairs are incompatible. Per-dimension figures
  exist for sources that score dimensions, against manual labels that name them.
- **Review queue**: pairs without a manual label whose sources disagree: the spread (max -
  min) of effective label, model score and behaviour score, times ln(1 + co-clicks) so that
  pairs users actually meet come first. Each entry says what the seed asks for its tier.
"""

from __future__ import annotations

import math

from streams.core.storage import Storage
from streams.core.storage.label_worth import COMPATIBLE_AT
from streams.core.storage.labels import SOURCES, effective_labels

__all__ = ["COMPATIBLE_AT", "cohen_kappa", "gold_report", "published_rows", "review_queue"]
SEED_REVIEW = {"high": "manual check", "medium": "LLM, then manual check", "low": "few-shot LLM"}


def cohen_kappa(a: list[bool], b: list[bool]) -> float:
    """Cohen's kappa of two binary raters on the same items (nan when undefined)."""
    n = len(a)
    if n == 0:
        return float("nan")
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    if chance >= 1.0:
        return 1.0 if observed == 1.0 else float("nan")
    return (observed - chance) / (1 - chance)


def _agreement(gold: list[float], other: list[float]) -> dict:
    g = [s >= COMPATIBLE_AT for s in gold]
    o = [s >= COMPATIBLE_AT for s in other]
    n = len(gold)
    return {"n": n,
            "mae": round(sum(abs(x - y) for x, y in zip(gold, other)) / n, 3),
            "accuracy": round(sum(x == y for x, y in zip(g, o)) / n, 3),
            "kappa": round(cohen_kappa(g, o), 3)}


def _labels_by_source(storage: Storage) -> dict[tuple[str, str], dict[str, dict]]:
    """(pair) -> source -> newest row of that source."""
    table = storage.query_arrow(
        f"SELECT item_a, item_b, source, argMax(score, labelled_at) AS score, "
        f"argMax(dim_scores, labelled_at) AS dim_scores, argMax(tier, labelled_at) AS tier "
        f"FROM {storage.table('pair_labels')} FINAL GROUP BY item_a, item_b, source")
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for row in table.to_pylist() if table.num_rows else []:
        row["dim_scores"] = dict(row["dim_scores"] or [])
        out.setdefault((row["item_a"], row["item_b"]), {})[row["source"]] = row
    return out


def published_rows(storage: Storage, pairs) -> dict[tuple[str, str], dict]:
    """The live published rows of ``pairs`` (those that have one)."""
    pairs = list(pairs)
    if not pairs:
        return {}
    table = storage.query_arrow(
        f"SELECT item_a, item_b, score, model_score, behaviour_score, count, dominant, users, lift, swing "
        f"FROM {storage.table('pair_scores_latest')} "
        "WHERE (item_a, item_b) IN arrayZip({a:Array(String)}, {b:Array(String)})",
        {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]})
    return {(r["item_a"], r["item_b"]): r for r in (table.to_pylist() if table.num_rows else [])}


def gold_report(storage: Storage) -> dict:
    """Each source against the manual labels (see the module docstring)."""
    labels = _labels_by_source(storage)
    gold = {pair: rows["manual"] for pair, rows in labels.items() if "manual" in rows}
    published = published_rows(storage, gold)
    report: dict = {"gold_pairs": len(gold), "compatible_at": COMPATIBLE_AT, "sources": {}}
    candidates = [s for s in SOURCES if s != "manual"]
    for source in candidates + ["published", "model", "behaviour_evidence"]:
        pairs: list = []
        per_dim: dict[str, list] = {}
        for pair, manual in gold.items():
            if source in SOURCES:
                row = labels[pair].get(source)
                value = row["score"] if row else None
                dims = row["dim_scores"] if row else {}
            else:
                row = published.get(pair)
                column = {"published": "score", "model": "model_score",
                          "behaviour_evidence": "behaviour_score"}[source]
                value, dims = (row[column] if row else None), {}
            if value is None:
                continue
            pairs.append((manual["score"], float(value)))
            for dim, gold_dim in manual["dim_scores"].items():
                if dim in dims:
                    per_dim.setdefault(dim, []).append((gold_dim, float(dims[dim])))
        if pairs:
            entry = _agreement([g for g, _ in pairs], [o for _, o in pairs])
            entry["dimensions"] = {dim: _agreement([g for g, _ in v], [o for _, o in v])
                                   for dim, v in sorted(per_dim.items())}
            report["sources"][source] = entry
    return report


def review_queue(storage: Storage, limit: int = 20) -> list[dict]:
    """Unreviewed pairs where label, model and behaviour disagree most, weighted by traffic."""
    labels = [row for row in effective_labels(storage) if row["source"] != "manual"]
    published = published_rows(storage, ((r["item_a"], r["item_b"]) for r in labels))
    queue = []
    for label in labels:
        pair = (label["item_a"], label["item_b"])
        row = published.get(pair)
        opinions = {f"label:{label['source']}": float(label["score"])}
        count = 0
        if row is not None:
            opinions["model"] = float(row["model_score"])
            opinions["behaviour"] = float(row["behaviour_score"])
            count = int(row["count"])
        if len(opinions) < 2:
            continue
        spread = max(opinions.values()) - min(opinions.values())
        impact = spread * math.log1p(count)
        queue.append({"item_a": pair[0], "item_b": pair[1], "tier": label["tier"],
                      "impact": round(impact, 3), "spread": round(spread, 2), "count": count,
                      "opinions": {k: round(v, 2) for k, v in opinions.items()},
                      "seed_review": SEED_REVIEW.get(label["tier"], "manual check")})
    queue.sort(key=lambda e: (-e["impact"], -e["spread"], e["item_a"], e["item_b"]))
    return queue[:limit]
