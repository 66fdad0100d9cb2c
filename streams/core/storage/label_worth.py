"""What each label source is worth, measured against behaviour where behaviour is well evidenced.

Why: there is no ground truth in production, and the default ``heuristic`` labels measured at
chance on an unfamiliar marketplace (AUC 0.48) while the pipeline trusted them. Pairs that many
sessions co-clicked carry their own verdict: the behaviour score of their lift (``models.blend``)
says whether they go together more often than popularity predicts. On those pairs each source's
label score is ranked against that verdict (ROC AUC, Mann-Whitney with ties counted half), and
its worth is ``max(0, 2 AUC - 1)``: 1 for a source that orders pairs as behaviour does, 0 at
chance or worse. ``labels quality`` and each publish's summary report it.

The ``behaviour`` source is lift itself, so its worth here is circular (reported, flagged).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from models.blend import behaviour_score
from streams.core.storage.base import Storage

COMPATIBLE_AT = 5.5  # a 1..10 score at or above this says "goes together"
CIRCULAR = {"behaviour"}  # sources derived from the lift they would be measured against


def roc_auc(truth, score) -> float:
    """Mann-Whitney AUC with ties counted half (nan without both classes)."""
    y = np.asarray(truth, bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(np.asarray(score, np.float64))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def label_worth(storage: Storage, min_count: int) -> dict:
    """Per label source on the pairs of the newest ``pair_stats`` with at least ``min_count``
    co-clicks: n, behaviour positives, AUC against behaviour, worth (see the module doc)."""
    t = storage.table
    table = storage.query_arrow(
        f"""SELECT l.source AS source, l.score AS score, s.lift AS lift
            FROM (SELECT item_a, item_b, source, argMax(score, labelled_at) AS score
                  FROM {t('pair_labels')} FINAL WHERE source != 'manual'
                  GROUP BY item_a, item_b, source) AS l
            INNER JOIN (SELECT item_a, item_b, lift FROM {t('pair_stats_latest')}
                        WHERE count >= {{n:UInt64}}) AS s
            ON l.item_a = s.item_a AND l.item_b = s.item_b""", {"n": min_count})
    report: dict = {"min_count": min_count, "sources": {}}
    if not table.num_rows:
        return report
    sources = np.asarray(table.column("source").to_pylist(), dtype=object)
    scores = table.column("score").to_numpy().astype(np.float64)
    verdict = behaviour_score(table.column("lift").to_numpy()) >= COMPATIBLE_AT
    for source in sorted(set(sources.tolist())):
        mine = sources == source
        auc = roc_auc(verdict[mine], scores[mine])
        report["sources"][source] = {
            "n": int(mine.sum()), "behaviour_positives": int(verdict[mine].sum()),
            "auc": None if np.isnan(auc) else round(auc, 3),
            "worth": None if np.isnan(auc) else round(max(0.0, 2 * auc - 1), 3),
            "circular": source in CIRCULAR}
    return report
