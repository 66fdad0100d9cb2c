"""Self-consistency of a scoring backend: the same pairs scored again, per dimension.

Why: agreement with people (``label_quality.gold_report``) says whether a backend is right;
agreement with itself says whether one label of it means anything. An LLM sampled at a
temperature, or one whose answer flips with a reworded prompt, gives a pair 3 today and 8
tomorrow; a label that unstable is noise for the teacher whatever its accuracy on average.

For each dimension and the weighted score, over ``repeats`` scorings of the same pairs:
``exact`` = share of pairs whose repeats all gave the same score, ``mean_abs_diff`` = mean
over pairs of the mean absolute difference between consecutive repeats, and ``kappa`` =
Cohen's kappa between the first two repeats on the verdict "goes together" (score >=
``COMPATIBLE_AT``), which discounts the agreement two coin flips would reach.
"""

from __future__ import annotations

import asyncio
from typing import Mapping, Sequence

from models.rubric import DIMENSIONS
from streams.labelling.quality import COMPATIBLE_AT, cohen_kappa


async def self_consistency(scorer, pairs: Sequence[tuple[Mapping, Mapping]], repeats: int = 2) -> dict:
    """Score every (product_a, product_b) ``repeats`` times with ``scorer`` (a PairScorer);
    pairs that fail to score in any repeat are counted in ``failed`` and left out."""
    if repeats < 2:
        raise ValueError("self-consistency needs at least 2 repeats")
    runs = []
    for _ in range(repeats):  # one repeat after the other: a cache or a warm state shows up
        runs.append(await asyncio.gather(*(scorer.score(a, b) for a, b in pairs), return_exceptions=True))
    kept = [k for k in range(len(pairs)) if not any(isinstance(run[k], BaseException) for run in runs)]
    report: dict = {"pairs": len(kept), "failed": len(pairs) - len(kept), "repeats": repeats,
                    "backend": getattr(getattr(scorer, "backend", None), "name", None), "dimensions": {}}
    for name in ("score", *DIMENSIONS):
        values = [[_value(run[k], name) for run in runs] for k in kept]
        series: list[list[float]] = [[v for v in s if v is not None] for s in values if None not in s]
        if not series:
            continue
        figures = {
            "n": len(series),
            "exact": round(sum(len(set(s)) == 1 for s in series) / len(series), 4),
            "mean_abs_diff": round(sum(sum(abs(x - y) for x, y in zip(s, s[1:])) / (len(s) - 1)
                                       for s in series) / len(series), 4),
            "kappa": _rounded(cohen_kappa([s[0] >= COMPATIBLE_AT for s in series],
                                          [s[1] >= COMPATIBLE_AT for s in series])),
        }
        if name == "score":
            report["overall"] = figures
        else:
            report["dimensions"][name] = figures
    return report


def _value(result, name: str) -> float | None:
    return result.score if name == "score" else result.dim_scores.get(name)


def _rounded(value: float) -> float | None:
    return None if value != value else round(value, 4)  # nan: undefined (one verdict only)
