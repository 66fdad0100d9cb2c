"""Held-out metrics: agreement with the teacher and the labels, and partner ranking quality.

The test split is small (tens of pairs for a few hundred labels), so each Spearman comes with
a paired-bootstrap 95% interval (Efron and Tibshirani, "An Introduction to the Bootstrap",
1993, ch. 13, percentile method): it says whether two runs' figures differ by more than the
split's sampling noise.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr


def _corr(fn, x, y) -> float:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return 0.0
    return float(fn(x, y)[0])


def spearman_ci95(x, y, resamples: int = 1000, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of Spearman(x, y), resampling pairs with replacement."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3:
        return [0.0, 0.0]
    idx = np.random.default_rng(seed).integers(0, len(x), (resamples, len(x)))
    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    rho = rho[np.isfinite(rho)]
    if not len(rho):
        return [0.0, 0.0]
    return [float(v) for v in np.percentile(rho, [2.5, 97.5])]


def ndcg_at_k(pairs, predicted, relevance, k: int = 10) -> float:
    """Mean NDCG@k of each anchor item's partners ranked by ``predicted`` (gains = labels)."""
    partners = defaultdict(list)
    for (a, b), p, r in zip(pairs, predicted, relevance):
        partners[a].append((p, r))
        partners[b].append((p, r))
    scores = []
    for rows in partners.values():
        if len(rows) < 2:
            continue
        gains = np.array([r for _, r in sorted(rows, key=lambda x: -x[0])][:k])
        ideal = np.array(sorted((r for _, r in rows), reverse=True)[:k])
        discounts = 1 / np.log2(np.arange(2, len(gains) + 2))
        best = float((ideal * discounts).sum())
        if best > 0:
            scores.append(float((gains * discounts).sum()) / best)
    return float(np.mean(scores)) if scores else 0.0


def evaluate(pairs, predicted, teacher, labels) -> dict:
    predicted, teacher, labels = (np.asarray(x, np.float64) for x in (predicted, teacher, labels))
    return {
        "n": int(len(predicted)),
        "spearman_vs_teacher": _corr(spearmanr, predicted, teacher),
        "spearman_vs_teacher_ci95": spearman_ci95(predicted, teacher),
        "pearson_vs_teacher": _corr(pearsonr, predicted, teacher),
        "spearman_vs_labels": _corr(spearmanr, predicted, labels),
        "spearman_vs_labels_ci95": spearman_ci95(predicted, labels),
        "pearson_vs_labels": _corr(pearsonr, predicted, labels),
        "mse_vs_labels": float(np.mean((predicted - labels) ** 2)) if len(labels) else 0.0,
        "ndcg10": ndcg_at_k(pairs, predicted, labels),
    }
