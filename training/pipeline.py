"""One distillation run, end to end; the Python API behind ``pairstream distill``.

labels in ClickHouse -> dataset (split by pair) -> teacher (soft targets) -> augmentation
(teacher labels unlabelled candidate pairs from ``pair_counts``) -> cross-encoder and
two-tower students (KD + CE + MSE) -> held-out evaluation -> ONNX export with parity (and
optional int8) -> registry -> promotion gate -> report (JSON + PNG).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.losses import DistillationLoss
from models.onnx_export import export_students, quantize_int8
from models.scale import SCORE_BINS
from streams.core.storage import registry
from streams.core.storage.items import products
from training import distributed
from training.config import TINY_TEACHER, DistillConfig
from training.dataset import (
    PairExample,
    candidate_pairs,
    catalogue_example,
    hard_negatives,
    load_labelled,
    worth_weights,
)
from training.evaluate import evaluate
from training.report import write_report
from training.result import RunResult
from training.students import predict_scores, train_student
from training.teacher import Teacher

log = logging.getLogger(__name__)
BINS = np.asarray(SCORE_BINS, np.float32)


def _candidates(storage, labelled: list[PairExample], multiple: float) -> list[PairExample]:
    """Unlabelled pairs for augmentation, most frequent first (a smaller multiple takes a
    prefix), as catalogue examples whose targets the teacher fills in."""
    n = int(round(multiple * len({(e.item_a, e.item_b) for e in labelled if e.split == "train"})))
    pairs = candidate_pairs(storage, {(e.item_a, e.item_b) for e in labelled}, n)
    items = products(storage, sorted({a for a, _ in pairs} | {b for _, b in pairs}))
    return [catalogue_example(items, a, b, np.full(10, 0.1, np.float32), None, 1.0, "train", "teacher")
            for a, b in pairs if a in items and b in items]


def _read(storage, config: DistillConfig, multiples: list[float]) -> tuple[list, list, dict]:
    """(labelled examples, augmentation candidates for the largest multiple, each label
    source's weight): the run's reads."""
    weights = worth_weights(storage, config.worth_min_count)
    if weights:
        log.info("label sources weighted by what they are worth against behaviour: %s", weights)
    labelled = load_labelled(storage, config.manual_weight,
                             behaviour_min_count=config.behaviour_min_count,
                             behaviour_evidence_count=config.behaviour_evidence_count,
                             source_weights=weights)
    train = [e for e in labelled if e.split == "train"]
    pairs = {(e.item_a, e.item_b) for e in train}
    if config.max_labels and len(pairs) > config.max_labels:
        # a deterministic subset of pairs (with every label each holds): the same pairs every
        # run, pairs with a manual label first
        manual = {(e.item_a, e.item_b) for e in train if e.source == "manual"}
        chosen = set(sorted(pairs, key=lambda p: (p not in manual, _pair_hash(*p)))[:config.max_labels])
        train = [e for e in train if (e.item_a, e.item_b) in chosen]
        labelled = train + [e for e in labelled if e.split != "train"]
    test = [e for e in labelled if e.split == "test"]
    if config.max_test and len(test) > config.max_test:
        # a deterministic subset as well: the gate compares runs on the same pairs
        kept = {id(e) for e in sorted(test, key=lambda e: _pair_hash(e.item_a, e.item_b))[:config.max_test]}
        labelled = [e for e in labelled if e.split != "test" or id(e) in kept]
    negatives = hard_negatives(storage, labelled, config.hard_negatives, config.seed)
    if negatives:
        log.info("%d hard negatives: same-category partners nobody co-clicked", len(negatives))
        labelled = labelled + negatives
    return labelled, _candidates(storage, labelled, max(multiples)) if config.uses_teacher else [], weights


def run(storage, data_dir: str | Path, config: DistillConfig | None = None,
        augmentation_curve: list[float] | None = None, register: bool = True) -> RunResult:
    """Run once; returns the runs ``RunResult`` (metrics, artifacts, promotion decision).

    Under ``accelerate launch`` every process calls this; only the main one reads ``storage``
    (the others may pass None) and writes models, registry rows and the report, and the others
    return ``RunResult(version=None, process=i)`` once the students are trained."""
    config = config or DistillConfig()
    started = time.time()
    version = time.strftime("v%Y%m%d-%H%M%S", time.gmtime(started)) + f"-{int(started * 1000) % 1000:03d}"
    out = Path(data_dir) / "models" / version
    torch.manual_seed(config.seed)
    multiples = sorted({config.augment_multiple, *(augmentation_curve or [])})
    labelled, candidates, source_weights = distributed.share(
        _read(storage, config, multiples) if distributed.is_main() else None)
    train = [e for e in labelled if e.split == "train"]
    test = [e for e in labelled if e.split == "test"]
    if len(train) < 8 or len(test) < 3:
        raise ValueError(f"too few labels to train: {len(train)} train / {len(test)} test pairs")
    labels_test = np.array([e.label for e in test], np.float32)
    pairs_test = [(e.item_a, e.item_b) for e in test]
    loss = DistillationLoss(config.alpha, config.beta, config.gamma, config.temperature)
    if config.uses_teacher:
        phase("teacher: fine-tuning on %d labelled pairs (%d held out)", len(train), len(test))
        path = None if config.teacher_path == TINY_TEACHER else config.teacher_path
        teacher = Teacher.build(path, Path(data_dir) / "models", seed=config.seed,
                                max_length=config.teacher_max_length)
        teacher_curve = teacher.fit(train, config.teacher_epochs, config.teacher_lr, config.batch_size,
                                    config.seed)
        teacher_test = teacher.predict(test) @ BINS
        phase("teacher: soft targets for %d labelled and %d augmentation pairs", len(train), len(candidates))
        train_probs = teacher.predict(train)  # the KD targets of the labelled rows, once
        for row, probs in zip(candidates, teacher.predict(candidates)):
            row.target = probs.astype(np.float32)  # augmentation: targets = teacher output
    else:
        # no teacher (none named, or the fast first run): the distillation term pulls towards
        # each label's own score distribution, there is nothing to augment with, and "vs
        # teacher" means vs labels
        phase("teacher: none (no --teacher, or --teacher-epochs 0): the students learn from %d labelled "
              "pairs alone", len(train))
        teacher_curve = []
        teacher_test = labels_test.copy()
        train_probs = np.stack([e.target for e in train]).astype(np.float32)

    train_pairs = len({(e.item_a, e.item_b) for e in train})

    def students(multiple: float) -> dict:
        augmented = candidates[:int(round(multiple * train_pairs))]
        rows = train + augmented
        teacher_probs = np.concatenate([train_probs] + [r.target[None] for r in augmented])
        result: dict = {"multiple": multiple, "train_labelled": len(train), "train_augmented": len(augmented)}
        for kind in ("cross", "two_tower"):
            phase("%s student: distilling on %d pairs (augmentation x%g)", kind, len(rows), multiple)
            model, tokenizer, curve = train_student(
                kind, rows, teacher_probs, config.student_backbone, loss, config.student_epochs,
                config.student_lr, config.batch_size, config.max_length, config.seed)
            scores = predict_scores(kind, model, tokenizer, test, config.max_length)
            result[kind] = {"model": model, "tokenizer": tokenizer, "curve": curve, "scores": scores,
                            "metrics": evaluate(pairs_test, scores, teacher_test, labels_test)}
        return result

    curve_points = []
    for multiple in augmentation_curve or []:
        if multiple == config.augment_multiple:
            continue
        point = students(multiple)
        curve_points.append(_curve_point(point))
    main = students(config.augment_multiple)
    curve_points = sorted(curve_points + [_curve_point(main)], key=lambda p: p["multiple"])
    if not distributed.is_main():
        return RunResult(version=None, process=distributed.accelerator().process_index)
    out.mkdir(parents=True, exist_ok=True)

    cross, tower = main["cross"], main["two_tower"]
    phase("export: both students to ONNX, with a parity check against torch")
    artifacts, parity = export_students(cross["model"], tower["model"], cross["tokenizer"], out,
                                        config.max_length, config.seed)
    if max(parity.values()) > config.parity_tolerance:
        raise RuntimeError(f"ONNX parity failed: {parity} > {config.parity_tolerance}")
    # which items the students saw (labelled, hard-negative and augmented rows): what an
    # evaluation of items never seen in training needs, and what says whether a model knows an item
    trained_items = sorted({x for e in train + candidates[:main["train_augmented"]] for x in (e.item_a, e.item_b)})
    (out / "trained_items.txt").write_text("".join(f"{item}\n" for item in trained_items))
    artifacts["trained_items"] = str(out / "trained_items.txt")
    metrics = {
        "teacher": evaluate(pairs_test, teacher_test, teacher_test, labels_test),
        "cross": cross["metrics"], "two_tower": tower["metrics"], "onnx_parity_max_abs": parity,
        "n_train": len(train), "n_test": len(test), "n_augmented": main["train_augmented"],
        "n_train_items": len(trained_items),
        # what each label source weighed in this run (sources not listed: 1)
        "label_source_weights": source_weights,
    }
    if config.quantize:
        phase("quantisation: int8 cross-encoder, scored against fp32")
        metrics["int8"] = _int8(Path(artifacts["cross_encoder"]), cross["tokenizer"], test,
                                cross["scores"], config.max_length)
        artifacts["cross_encoder_int8"] = metrics["int8"].pop("path")
    phase("registry: the promotion gate against the incumbent")
    decision = (_gate(storage, version, metrics, artifacts, test, config, started) if register
                else {"promoted": None, "reason": "not registered"})
    result = RunResult(
        version=version, config=asdict(config), processes=distributed.accelerator().num_processes,
        metrics=metrics, artifacts=artifacts, augmentation_curve=curve_points, decision=decision,
        minutes=round((time.time() - started) / 60, 2))
    phase("report: plots and metrics")
    result.report = write_report(out / "report", result.to_dict(),
                         {"teacher": teacher_curve, "cross student": cross["curve"],
                          "two-tower student": tower["curve"]},
                         {"cross-encoder": (teacher_test, cross["scores"]),
                          "two-tower": (teacher_test, tower["scores"])},
                         curve_points if len(curve_points) > 1 else None)
    return result


def phase(message: str, *args) -> None:
    """One line per step of a run (main process only): the run's log says what it is doing,
    and the demo's progress line shows the newest."""
    if distributed.is_main():
        log.info(message, *args)


def _pair_hash(item_a: str, item_b: str) -> str:
    import hashlib

    return hashlib.sha1(f"{item_a}|{item_b}|order".encode()).hexdigest()


def _curve_point(result: dict) -> dict:
    point = {"multiple": result["multiple"], "train_augmented": result["train_augmented"]}
    for student in ("cross", "two_tower"):
        metrics = result[student]["metrics"]
        for against in ("labels", "teacher"):
            key = f"spearman_vs_{against}"
            point[f"spearman_{student}_vs_{against}"] = metrics[key]
            point[f"spearman_{student}_vs_{against}_ci95"] = metrics[key + "_ci95"]
    return point


def _onnx_scores(path: Path, tokenizer, examples, max_length: int) -> np.ndarray:
    from models.runtime import OnnxCrossEncoder

    scorer = OnnxCrossEncoder(path.parent, tokenizer, file=path.name, max_length=max_length)
    return scorer.predict([(e.text_a, e.text_b) for e in examples])


def _int8(path: Path, tokenizer, test, fp32_scores, max_length: int) -> dict:
    quantised = quantize_int8(path)
    scores = _onnx_scores(quantised, tokenizer, test, max_length)
    from scipy.stats import spearmanr

    labels = [e.label for e in test]
    return {"path": str(quantised),
            "max_abs_score_delta": float(np.abs(scores - fp32_scores).max()),
            "spearman_vs_labels_delta": float(spearmanr(scores, labels)[0] - spearmanr(fp32_scores, labels)[0])}


def _incumbent_scores(artifacts: dict[str, str], test) -> dict[str, np.ndarray]:
    """The promoted bundle's two students re-scored from its ONNX files on the current test
    split, as serving runs them (its own tokenizer and ``max_length``)."""
    from models.runtime import Students

    students = Students("incumbent", artifacts)
    texts_a, texts_b = [e.text_a for e in test], [e.text_b for e in test]
    tower = students.two_tower
    return {"cross": students.cross.predict(list(zip(texts_a, texts_b))),
            "two_tower": tower.score_embeddings(tower.embed(texts_a), tower.embed(texts_b))}


def _gate(storage, version, metrics, artifacts, test, config, started) -> dict:
    """Promote the candidate unless its deciding student (``registry.GATE_STUDENT``) is worse
    than the incumbent's on the same pairs; both students' comparisons are recorded."""
    pairs, labels = [(e.item_a, e.item_b) for e in test], [e.label for e in test]
    students = {kind: {"candidate": metrics[kind][registry.GATE_METRIC], "incumbent": None}
                for kind in ("two_tower", "cross")}
    incumbent_row = registry.promoted(storage)
    if incumbent_row is not None:
        for kind, scores in _incumbent_scores(incumbent_row["artifacts"], test).items():
            students[kind]["incumbent"] = evaluate(pairs, scores, scores, labels)[registry.GATE_METRIC]
    deciding = students[registry.GATE_STUDENT]
    ok = registry.gate(deciding["candidate"], deciding["incumbent"], config.tolerance)
    if ok:
        registry.promote(storage, version, metrics, artifacts, started)
    else:
        registry.record(storage, version, "rejected", metrics, artifacts, started)
    return {"promoted": ok, "metric": registry.GATE_METRIC, "student": registry.GATE_STUDENT,
            "candidate": deciding["candidate"], "incumbent": deciding["incumbent"], "students": students,
            "incumbent_version": incumbent_row and incumbent_row["version"], "tolerance": config.tolerance}
