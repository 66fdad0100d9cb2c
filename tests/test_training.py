"""Training end to end on a CPU with tiny configs: labels in chDB -> teacher -> augmentation ->
both students -> ONNX with parity -> registry -> the gate refuses a candidate that is not
good enough."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from models.losses import DistillationLoss
from streams.benchmarks.distill import seed_labels
from training import registry
from training.dataset import load_labelled, smoothed, split_of
from training.pipeline import DistillConfig, run

TINY = DistillConfig(student_backbone="tiny", teacher_epochs=2, teacher_lr=1e-3, student_epochs=2,
                     student_lr=1e-3, max_length=48, augment_multiple=1.0)


def test_split_is_by_pair_and_deterministic():
    pairs = [(f"a{i}", f"b{i}") for i in range(2000)]
    splits = [split_of(a, b) for a, b in pairs]
    assert splits == [split_of(a, b) for a, b in pairs]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert 0.75 < share["train"] < 0.85 and 0.07 < share["test"] < 0.13


def test_distillation_loss_terms():
    loss = DistillationLoss(alpha=1.0, beta=0.0, gamma=0.0, temperature=2.0)
    teacher = torch.tensor([smoothed(7.0)])
    matching = torch.log(teacher)  # a student whose distribution equals the teacher's
    assert loss(matching, teacher)["loss"].item() == pytest.approx(0.0, abs=1e-5)
    assert loss(torch.zeros(1, 10), teacher)["loss"].item() > 0.1
    mixed = DistillationLoss(alpha=0.0, beta=1.0, gamma=1.0)
    parts = mixed(torch.zeros(2, 10), torch.tensor(np.stack([smoothed(9.0), smoothed(9.0)])),
                  torch.tensor([8, -1]))  # the second row has no label: CE is masked
    assert parts["ce"].item() == pytest.approx(np.log(10) / 2, rel=1e-4)
    teacher_mean = float((smoothed(9.0) * np.arange(1, 11)).sum())  # 8.9: the Gaussian is cut at 10
    assert parts["mse"].item() == pytest.approx((5.5 - teacher_mean) ** 2, rel=1e-3)


def test_end_to_end_registry_and_gate(storage, tmp_path):
    seed_labels(storage, n_labelled=160, n_candidates=200)
    labelled = load_labelled(storage)
    assert len(labelled) == 160 and {e.split for e in labelled} == {"train", "val", "test"}
    first = run(storage, tmp_path, TINY)
    m = first["metrics"]
    assert m["n_augmented"] == m["n_train"]  # augment multiple 1: as many teacher-labelled pairs
    assert max(m["onnx_parity_max_abs"].values()) <= 1e-4
    for name in ("cross_encoder", "item_encoder", "pair_head", "cross_encoder_int8"):
        assert Path(first["artifacts"][name]).stat().st_size > 0
    assert "max_abs_score_delta" in m["int8"]
    for key in ("spearman_vs_teacher", "pearson_vs_labels", "mse_vs_labels", "ndcg10"):
        assert np.isfinite(m["cross"][key]) and np.isfinite(m["two_tower"][key])
    for plot in ("loss_curves", "scatter", "json"):
        assert Path(first["report"][plot]).stat().st_size > 0
    assert first["decision"]["promoted"] is True and first["decision"]["incumbent"] is None
    assert registry.promoted(storage)["version"] == first["version"]
    # the second candidate must beat the incumbent (re-scored from its ONNX file on the same
    # held-out pairs) by more than a Spearman can: refused, and the incumbent stays promoted
    second = run(storage, tmp_path, TINY.__class__(**{**TINY.__dict__, "tolerance": -1.01,
                                                      "quantize": False, "seed": 1}))
    decision = second["decision"]
    assert decision["promoted"] is False and decision["incumbent_version"] == first["version"]
    assert decision["incumbent"] == pytest.approx(m["cross"]["spearman_vs_labels"], abs=1e-3)
    statuses = {r["version"]: r["status"] for r in registry.models(storage)}
    assert statuses == {first["version"]: "promoted", second["version"]: "rejected"}


def test_gate_rule():
    assert registry.gate(0.5, None, 0.01)
    assert registry.gate(0.795, 0.8, 0.01) and not registry.gate(0.7, 0.8, 0.01)
