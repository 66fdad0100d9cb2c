"""How much of the cross-encoder's judgement to publish on the pairs it rescored.

Why: the cross-encoder reads both items at once, so with enough training it is the finer
judge of a pair; the two-tower reuses a pretrained sentence encoder and learns faster from
few labels. Which one is better is a property of the round (data, epochs, hardware), not of
the architecture: on the CPU default round (2,000 labels, 2 epochs) the cross-encoder ranked
held-out frequent pairs worse than the two-tower on both generator families, and replacing
the two-tower's score with it moved the published AUC by up to 0.06 between runs of the same
command (docs/quality.md). So the publisher measures it each time instead of assuming it.

The measure needs no ground truth, the same one ``streams.core.storage.label_worth`` applies
to label sources: on rescored pairs the students never trained on (``training.held_out``) and
that were co-clicked at least ``tier_low`` times, the behaviour score of their (smoothed) lift
says whether they go together. On a pair with few co-clicks that verdict is noisy, but every
mix is ranked against the same verdicts, so the noise lowers all their AUCs alike and favours
no student; a stricter floor (``tier_medium``) left 7 such pairs on the marketplace bench,
against ~2,500 at ``tier_low``. Each candidate mix ``(1 - w) * two_tower + w * cross`` (the cross score already on
the two-tower's scale, ``publisher.quantile_map``) is ranked against that verdict (ROC AUC),
and the best ``w`` of a coarse grid is used for every rescored pair. Equal AUCs go to the
``w`` nearest an even mix: averaging two students whose errors differ lowers the variance of
either (the usual case for ensembles; Dietterich, "Ensemble Methods in Machine Learning", 2000).
With too few such pairs, or one class only, the even mix is kept and the summary says so.

The grid is coarse on purpose: a few hundred verdicts cannot tell w = 0.6 from 0.7, and a
finer grid would only fit their noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.blend import behaviour_score
from streams.core.storage.label_worth import COMPATIBLE_AT, roc_auc

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # the cross-encoder's share on the pairs it rescored
UNMEASURED_WEIGHT = 0.5  # without enough verdicts: an even mix of the two students
MIN_PAIRS = 30  # verdicts needed to measure (the floor label_worth's consumers use too)
MIN_PER_CLASS = 5  # and at least this many "goes together" and "does not" among them


@dataclass(frozen=True)
class CrossMix:
    weight: float  # the cross-encoder's share, 0..1
    source: str  # "fitted" or "unmeasured"
    pairs: int  # verdicts it was measured on
    auc: dict[float, float] = field(default_factory=dict)  # w -> AUC of the mix against behaviour


def mix(two_tower, cross, weight: float) -> np.ndarray:
    """The published model score of a rescored pair: both on the two-tower's scale."""
    return ((1.0 - weight) * np.asarray(two_tower, np.float64)
            + weight * np.asarray(cross, np.float64)).astype(np.float32)


def fit_cross_weight(two_tower, cross, lift, grid=WEIGHT_GRID) -> CrossMix:
    """The cross-encoder's share whose mix best orders these pairs as behaviour does.
    All three arrays cover the same pairs: held-out, rescored, co-clicked at least
    ``tier_low`` times."""
    verdict = behaviour_score(lift) >= COMPATIBLE_AT
    n, positives = int(len(verdict)), int(verdict.sum())
    if n < MIN_PAIRS or min(positives, n - positives) < MIN_PER_CLASS:
        return CrossMix(UNMEASURED_WEIGHT, "unmeasured", n)
    auc = {float(w): round(roc_auc(verdict, mix(two_tower, cross, w)), 4) for w in grid}
    best = max(auc, key=lambda w: (auc[w], -abs(w - UNMEASURED_WEIGHT)))
    return CrossMix(best, "fitted", n, auc)
