"""``pairstream bench distill``: one distillation round on a fixed synthetic labelled set.

The generator's co-clicked pairs carry a true 1..10 compatibility; the ``--labelled`` most
frequently co-clicked ones become labels (source llm), as the tier router would have sent
them to scoring, and all pairs are in ``pair_counts`` with their counts: augmentation takes
the next most frequent ones. Students are trained at augmentation
multiples 0, 1 and 4 of the labelled training set (the quality curve); the main run
(``--augment``, default 4: augmentation is what shows the students the teacher's behaviour
away from the labelled pairs) is exported, checked for ONNX parity and reported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import tempfile
import time

import pyarrow as pa

from streams.cli.training import distill_config
from streams.core.storage.chdb_client import ChdbStorage
from streams.core.storage.labels import LabelRow, write_labels
from streams.core.storage.migrations import migrate
from streams.dev.synthetic import co_clicks, generate, truth_pairs
from streams.ingest.catalogue import Catalogue
from training import run as run_distillation
from training.config import TINY_TEACHER


def seed_labels(storage, n_labelled: int, seed: int = 1) -> dict:
    """Catalogue, co-click counts and labels the way the stream leaves them: the
    ``n_labelled`` most frequently co-clicked pairs carry labels (the tier router sends
    frequent pairs to scoring; their true score stands in for the LLM's), and every
    co-clicked pair is in ``pair_counts`` with its count, so augmentation draws the next most
    frequent ones. Ties in count are broken in a seeded order."""
    from collections import Counter

    items, clicks = generate(1500, 800, 60000, seed=seed)
    Catalogue().upsert(storage, items)
    counts = Counter(co_clicks(clicks))
    truth = {(t["item_a"], t["item_b"]): t for t in truth_pairs(items, clicks)}
    order = list(truth)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda pair: -counts[pair])  # stable: the shuffle breaks ties
    labelled = [truth[p] for p in order[:n_labelled]]
    write_labels(storage, [LabelRow(t["item_a"], t["item_b"], float(t["score"]), "medium", "llm",
                                    "synthetic-truth", "generator", "truth") for t in labelled])
    day = dt.date(2026, 6, 1)
    storage.insert_arrow("pair_counts", pa.table({
        "item_a": [a for a, _ in order], "item_b": [b for _, b in order],
        "day": pa.array([day] * len(order)),
        "count": pa.array([counts[p] for p in order], pa.uint64())}))
    return {"labelled": len(labelled), "unlabelled_pairs": len(order) - len(labelled),
            "min_labelled_count": counts[order[len(labelled) - 1]] if labelled else 0}


def run(args) -> dict:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="pairstream-bench-") as tmp:
        storage = ChdbStorage(f"{tmp}/chdb", "bench")
        migrate(storage)
        sizes = seed_labels(storage, args.labelled)
        # this bench measures distillation from a teacher: the tiny one unless one is named
        config = distill_config(args)
        if not config.teacher_path:
            config = dataclasses.replace(config, teacher_path=TINY_TEACHER)
        result = run_distillation(storage, args.out or tmp, config, augmentation_curve=[0.0, 1.0, 4.0])
        storage.close()
    m = result.metrics
    out = {
        **sizes,
        "augment_multiple": config.augment_multiple, "student_epochs": config.student_epochs,
        "student_lr": config.student_lr,
        "spearman_cross_vs_teacher": round(m["cross"]["spearman_vs_teacher"], 4),
        "spearman_cross_vs_teacher_ci95": _rounded(m["cross"]["spearman_vs_teacher_ci95"]),
        "spearman_two_tower_vs_teacher": round(m["two_tower"]["spearman_vs_teacher"], 4),
        "spearman_two_tower_vs_teacher_ci95": _rounded(m["two_tower"]["spearman_vs_teacher_ci95"]),
        "n_test": m["n_test"],
        "spearman_cross_vs_labels": round(m["cross"]["spearman_vs_labels"], 4),
        "spearman_two_tower_vs_labels": round(m["two_tower"]["spearman_vs_labels"], 4),
        "spearman_teacher_vs_labels": round(m["teacher"]["spearman_vs_labels"], 4),
        "ndcg10_cross": round(m["cross"]["ndcg10"], 4),
        "onnx_parity_max_abs": m["onnx_parity_max_abs"],
        "int8": m.get("int8"),
        "augmentation_curve": [{k: _rounded(v) for k, v in p.items()} for p in result.augmentation_curve],
        "minutes": round((time.time() - started) / 60, 2),
        "report": result.report.get("json") if args.out else None,
    }
    print(f"cross vs teacher {out['spearman_cross_vs_teacher']:.3f} {out['spearman_cross_vs_teacher_ci95']}, "
          f"two-tower vs teacher {out['spearman_two_tower_vs_teacher']:.3f} "
          f"{out['spearman_two_tower_vs_teacher_ci95']} (95% bootstrap over {out['n_test']} test pairs), "
          f"minutes {out['minutes']}")
    for point in out["augmentation_curve"]:
        print(f"  augmentation x{point['multiple']:g}: vs teacher cross {point['spearman_cross_vs_teacher']:.3f} "
              f"two-tower {point['spearman_two_tower_vs_teacher']:.3f}; vs labels cross "
              f"{point['spearman_cross_vs_labels']:.3f} two-tower {point['spearman_two_tower_vs_labels']:.3f}")
    return out


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
