"""The cross-encoder's share of a rescored pair's score is measured, not assumed."""

from __future__ import annotations

import numpy as np

from streams.core.storage.scores import SCORERS
from streams.publishing.cross_mix import MIN_PAIRS, UNMEASURED_WEIGHT, fit_cross_weight, mix
from streams.publishing.publisher import mix_cross_scores
from training import held_out


def _verdicts(n: int, seed: int):
    """Lifts whose behaviour verdict is half "goes together" (lift e^2) and half not (lift 1),
    and a score per pair that follows the verdict with noise of the given spread."""
    rng = np.random.default_rng(seed)
    fits = rng.permutation(np.arange(n) < n // 2)
    lift = np.where(fits, np.e ** 2, 1.0)

    def student(noise: float) -> np.ndarray:
        return (np.where(fits, 6.0, 4.0) + rng.normal(0, noise, n)).astype(np.float32)

    return lift, student


def test_the_student_that_agrees_with_behaviour_gets_the_share():
    lift, student = _verdicts(400, seed=0)
    good, useless = student(1.0), student(50.0)
    assert fit_cross_weight(good, useless, lift).weight == 0.0  # a cross-encoder at chance: none of it
    fitted = fit_cross_weight(useless, good, lift)
    assert fitted.weight == 1.0 and fitted.source == "fitted" and fitted.pairs == 400
    assert fitted.auc[1.0] > 0.8 > fitted.auc[0.0]


def test_two_equally_good_students_are_averaged():
    """Independent errors of the same size: the even mix ranks best (an ensemble)."""
    lift, student = _verdicts(2000, seed=1)
    fitted = fit_cross_weight(student(2.0), student(2.0), lift)
    assert fitted.weight == 0.5, fitted.auc
    assert fitted.auc[0.5] > max(fitted.auc[0.0], fitted.auc[1.0])


def test_too_few_verdicts_keep_the_even_mix():
    lift, student = _verdicts(MIN_PAIRS - 1, seed=2)
    few = fit_cross_weight(student(1.0), student(50.0), lift)
    assert (few.weight, few.source, few.pairs, few.auc) == (UNMEASURED_WEIGHT, "unmeasured", MIN_PAIRS - 1, {})
    one_class = fit_cross_weight(np.ones(100), np.ones(100), np.full(100, np.e ** 2))
    assert one_class.source == "unmeasured"


def test_mix_keeps_the_two_tower_scale():
    assert np.allclose(mix([2.0, 8.0], [8.0, 2.0], 0.25), [3.5, 6.5])


def _pairs(n: int, held: bool = True) -> list[tuple[str, str]]:
    pairs, k = [], 0
    while len(pairs) < n:
        a, b = f"a{k:05d}", f"b{k:05d}"
        if held_out(a, b) == held:
            pairs.append((a, b))
        k += 1
    return pairs


def test_the_publisher_publishes_the_measured_mix(settings):
    """Held-out rescored pairs with a behaviour verdict decide; a share of 0 leaves the
    two-tower's score and scorer, a positive one mixes and names the cross-encoder. Pairs the
    students trained on, or nobody co-clicked (a labelled pair), are not measured."""
    n = 200
    ids = [x for p in _pairs(n) for x in p]
    a, b = np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)
    lift, student = _verdicts(n, seed=3)
    count = np.full(n, settings.tier_low, np.uint64)
    rescored = np.arange(n)
    for cross, expected in ((student(50.0), 0.0), (student(0.5), 1.0)):
        two_tower = student(50.0) if expected else student(0.5)
        score, scorer = two_tower.copy(), np.zeros(n, np.int8)
        mixed = mix_cross_scores(settings, ids, a, b, score, scorer, rescored, cross, count, lift)
        assert mixed.weight == expected and mixed.pairs == n
        if expected:
            assert np.allclose(score, cross) and (scorer == SCORERS.index("cross_encoder")).all()
        else:
            assert np.array_equal(score, two_tower) and not scorer.any()
    thin = mix_cross_scores(settings, ids, a, b, score.copy(), scorer.copy(), rescored, cross,
                            np.zeros(n, np.uint64), lift)
    assert (thin.source, thin.pairs) == ("unmeasured", 0)
    trained_on = [x for p in _pairs(n, held=False) for x in p]
    seen = mix_cross_scores(settings, trained_on, a, b, score.copy(), scorer.copy(), rescored, cross, count, lift)
    assert (seen.source, seen.pairs) == ("unmeasured", 0)
