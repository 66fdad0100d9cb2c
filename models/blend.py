"""Behaviour evidence as a 1..10 score, and its blend with the model's compatibility score.

Why a blend: the students judge compatibility from the items' text, which generalises to
pairs nobody has co-clicked yet but is only as good as its labels; behaviour (co-clicks
over what popularity predicts) is direct evidence of what users take together, but only for
pairs with enough of it. So the published score leans on behaviour in proportion to how
much of it a pair has, and on the model for the long tail.

- ``behaviour_score(lift)`` = 1 + 9 * sigmoid(2 * (ln(lift) - 1)): independence (lift 1)
  maps to ~2, lift e to 5.5, lift e^2 to ~9. ``lift`` is the smoothed co-click lift of
  ``streams.core.storage.stats`` (pairs with little evidence already sit near 1).
- ``evidence_weight(count)`` = count / (count + k): at k co-clicks both sources weigh the
  same (k = ``blend_evidence_count``, default 5); 20 co-clicks -> 0.8, 100 -> 0.95.
- ``blend`` = w * behaviour + (1 - w) * model, so still 1..10. ``dominant`` says which source
  had the larger weight: every published row carries it with both inputs.

Where k comes from (``fit_evidence_count``): k is the ratio of two noise levels, the
behaviour score's variance per co-click and the model's error variance (w = n / (n + k) is the
precision-weighted mean of two noisy estimates of one quantity when the first one's variance
falls as 1/n). Neither needs ground truth to measure: split the behaviour into two disjoint
halves (even and odd days), blend the model with one half for each k of a grid, and score the
blend by its squared error against the other half's behaviour score. The other half's noise
is independent of the blend, so this error is the blend's error against the behaviour a pair
would show with unlimited data plus a constant: the k with the smallest error is the best
estimate of the right one (cross-validation; Stone, "Cross-validatory choice and assessment
of statistical predictions", JRSS B, 1974). k is in co-click units, so the k fitted on half
the data applies to all of it. The fit runs on pairs the model never trained on; with too few
of them the publisher keeps the configured k (``blend_evidence_count``).

What it cannot see: where behaviour itself is biased (pairs co-clicked for a reason other than
going together) the fit trusts it; only labels from people (``pairstream labels quality``)
measure that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# candidate k (co-clicks at which both sources weigh the same), geometric from 0.5 to 1000
K_GRID = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 50.0, 80.0, 130.0, 200.0, 350.0, 600.0,
          1000.0)


def behaviour_score(lift) -> np.ndarray:
    pmi = np.log(np.maximum(np.asarray(lift, np.float64), 1e-6))
    return (1.0 + 9.0 / (1.0 + np.exp(-2.0 * (pmi - 1.0)))).astype(np.float32)


def evidence_weight(count, k: float) -> np.ndarray:
    count = np.asarray(count, np.float64)
    return (count / (count + max(float(k), 1e-9))).astype(np.float32)


def blend(model_score, lift, count, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(published score, behaviour score, behaviour weight) per pair."""
    behaviour = behaviour_score(lift)
    weight = evidence_weight(count, k)
    score = weight * behaviour + (1.0 - weight) * np.asarray(model_score, np.float32)
    return score.astype(np.float32), behaviour, weight


@dataclass(frozen=True)
class BlendFit:
    k: float
    pairs: int
    errors: dict[float, float]  # k -> mean squared error against the other half's behaviour


def fit_evidence_count(model_score, halves, grid=K_GRID) -> BlendFit:
    """The k of ``blend`` whose blend of the model with one half of the behaviour best predicts
    the other half, both ways round. ``halves`` = ((count_0, lift_0), (count_1, lift_1)):
    the same pairs' co-clicks and lift in two disjoint halves of the data."""
    model = np.asarray(model_score, np.float64)
    (count_0, lift_0), (count_1, lift_1) = halves
    target_0, target_1 = behaviour_score(lift_0), behaviour_score(lift_1)
    errors = {}
    for k in grid:
        blend_0 = blend(model, lift_0, count_0, k)[0].astype(np.float64)
        blend_1 = blend(model, lift_1, count_1, k)[0].astype(np.float64)
        errors[float(k)] = float((np.mean((blend_0 - target_1) ** 2) + np.mean((blend_1 - target_0) ** 2)) / 2)
    best = min(errors, key=lambda k: (errors[k], k))
    return BlendFit(best, int(len(model)), errors)
