"""training.evaluate: the bootstrap interval around a held-out Spearman."""

import numpy as np
from scipy.stats import spearmanr

from training.evaluate import evaluate, spearman_ci95


def test_interval_brackets_the_estimate_and_narrows_with_more_pairs():
    rng = np.random.default_rng(3)
    widths = []
    for n in (60, 600):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        lo, hi = spearman_ci95(x, y)
        assert lo < spearmanr(x, y)[0] < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 10x the pairs, about a third of the width


def test_unrelated_scores_give_an_interval_around_zero():
    rng = np.random.default_rng(4)
    lo, hi = spearman_ci95(rng.normal(size=80), rng.normal(size=80))
    assert lo < 0 < hi


def test_evaluate_reports_intervals_and_is_seeded():
    pairs = [(f"a{i % 5}", f"b{i}") for i in range(40)]
    rng = np.random.default_rng(5)
    teacher = rng.uniform(1, 10, 40)
    predicted = teacher + rng.normal(0, 1, 40)
    labels = np.round(teacher)
    first, second = evaluate(pairs, predicted, teacher, labels), evaluate(pairs, predicted, teacher, labels)
    assert first == second
    assert first["spearman_vs_teacher_ci95"][0] < first["spearman_vs_teacher"] < first["spearman_vs_teacher_ci95"][1]
    assert spearman_ci95([1, 2], [2, 1]) == [0.0, 0.0]  # too few pairs for an interval
