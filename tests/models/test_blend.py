"""The blend's weight, fitted without ground truth: on simulated pairs whose true affinity
only the test knows, the k chosen from two noisy halves of behaviour is the k that is best
against the truth (within the grid's resolution), and it moves the right way when the
model gets better or worse."""

from __future__ import annotations

import numpy as np
import pytest

from models.blend import K_GRID, behaviour_score, blend, fit_evidence_count


def _simulate(model_noise: float, seed: int = 0, n: int = 4000):
    """True PMI per pair, counts per half, each half's log-lift = truth + noise / sqrt(count)."""
    rng = np.random.default_rng(seed)
    pmi = rng.normal(0.8, 1.0, n)
    expected = rng.lognormal(1.0, 1.0, n)  # co-clicks per half differ a lot between pairs
    halves = []
    for _ in range(2):
        count = rng.poisson(expected).astype(np.float64)
        lift = np.exp(pmi + rng.normal(0, 1, n) / np.sqrt(np.maximum(count, 1)))
        halves.append((count, lift.astype(np.float32)))
    truth = behaviour_score(np.exp(pmi)).astype(np.float64)
    model = truth + rng.normal(0, model_noise, n)
    return model, halves, truth


def _error_against_truth(model, halves, truth, k) -> float:
    return float(np.mean([np.mean((blend(model, lift, count, k)[0] - truth) ** 2) for count, lift in halves]))


@pytest.mark.parametrize("model_noise", [0.5, 1.5, 3.0])
def test_the_fitted_k_is_near_the_best_k_against_the_truth(model_noise):
    model, halves, truth = _simulate(model_noise)
    fit = fit_evidence_count(model, halves)
    best = min(K_GRID, key=lambda k: _error_against_truth(model, halves, truth, k))
    assert fit.pairs == len(model) and set(fit.errors) == set(K_GRID)
    position = K_GRID.index(fit.k) - K_GRID.index(best)
    assert abs(position) <= 1, (fit.k, best)
    # and what it chose costs little against the truth compared with the best grid point
    assert _error_against_truth(model, halves, truth, fit.k) <= 1.05 * _error_against_truth(model, halves, truth, best)


def test_a_better_model_gets_a_larger_k():
    ks = [fit_evidence_count(*_simulate(noise)[:2]).k for noise in (0.3, 1.0, 3.0)]
    assert ks[0] > ks[1] > ks[2], ks


def test_a_useless_model_leaves_behaviour_in_charge():
    model, halves, _ = _simulate(1.0)
    fit = fit_evidence_count(np.full_like(model, 5.5), halves)
    assert fit.k <= 2.0
