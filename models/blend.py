"""Behaviour evidence as a 1..10 score, and its blend with the model's compatibility score.

Why a blend: the students judge compatibility from the items' text, which generalises to
pairs nobody has co-clicked yet but is only as good as its labels; behaviour (co-clicks
over what popularity predicts) is direct evidence of what users take together, but only for
pairs with enough of it. So the published score leans on behaviour in proportion to how
much of it a pair has, and on the model for the long tail.

- ``behaviour_score(lift)`` = 1 + 9 * sigmoid(2 * (ln(lift) - 1)): independence (lift 1)
  maps to ~2, lift e to 5.5, lift e^2 to ~9. ``lift`` is the smoothed co-click lift of
  ``streams.storage.stats`` (pairs with little evidence already sit near 1).
- ``evidence_weight(count)`` = count / (count + k): at k co-clicks both sources weigh the
  same (k = ``blend_evidence_count``, default 5); 20 co-clicks -> 0.8, 100 -> 0.95.
- ``blend`` = w * behaviour + (1 - w) * model, so still 1..10. ``dominant`` says which source
  had the larger weight: every published row carries it with both inputs.

A documented mapping rather than a fitted one: a fit needs ground truth, and the labels at
hand may come from the ``heuristic`` backend, which is no ground truth.
"""

from __future__ import annotations

import numpy as np


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
