"""Training end to end on a CPU with tiny configs: labels in chDB -> teacher -> augmentation ->
both students -> ONNX with parity -> registry -> the gate refuses a candidate whose two-tower
is not good enough."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.distill import seed_labels
from models.local import build_tiny_causal_lm, minilm_path
from models.losses import DistillationLoss
from models.text import aligned_pair_text
from streams.core.storage import registry
from training import RunResult
from training.batches import warmup_cosine
from training.config import DistillConfig
from training.dataset import PairExample, load_labelled, smoothed, split_of
from training.pipeline import _gate, run
from training.teacher import teacher_text

TINY = DistillConfig(student_backbone="tiny", teacher_path="tiny", teacher_epochs=2, teacher_lr=1e-3, student_epochs=2,
                     student_lr=1e-3, max_length=48, augment_multiple=1.0)


def test_split_is_by_pair_and_deterministic():
    pairs = [(f"a{i}", f"b{i}") for i in range(2000)]
    splits = [split_of(a, b) for a, b in pairs]
    assert splits == [split_of(a, b) for a, b in pairs]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert 0.75 < share["train"] < 0.85 and 0.07 < share["test"] < 0.13


def test_distillation_loss_terms():
    loss = DistillationLoss(alpha=1.0, beta=0.0, gamma=0.0, temperature=2.0)
    teacher = torch.from_numpy(smoothed(7.0)[None, :])
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
    seed_labels(storage, n_labelled=160)
    labelled = load_labelled(storage)
    assert len(labelled) == 160 and {e.split for e in labelled} == {"train", "val", "test"}
    first = run(storage, tmp_path, TINY)
    m = first.metrics
    assert m["n_augmented"] == m["n_train"]  # augment multiple 1: as many teacher-labelled pairs
    assert max(m["onnx_parity_max_abs"].values()) <= 1e-4
    for name in ("cross_encoder", "item_encoder", "pair_head", "cross_encoder_int8"):
        assert Path(first.artifacts[name]).stat().st_size > 0
    # the items the students saw: every item of a train-split pair, and the augmented ones
    trained = Path(first.artifacts["trained_items"]).read_text().split()
    assert trained == sorted(set(trained)) and len(trained) == m["n_train_items"]
    assert {x for e in labelled if e.split == "train" for x in (e.item_a, e.item_b)} < set(trained)
    assert "max_abs_score_delta" in m["int8"]
    for key in ("spearman_vs_teacher", "pearson_vs_labels", "mse_vs_labels", "ndcg10"):
        assert np.isfinite(m["cross"][key]) and np.isfinite(m["two_tower"][key])
    for plot in ("loss_curves", "scatter", "json"):
        assert Path(first.report[plot]).stat().st_size > 0
    assert first.decision["promoted"] is True and first.decision["incumbent"] is None
    assert registry.promoted(storage)["version"] == first.version
    # the second candidate must beat the incumbent (re-scored from its ONNX file on the same
    # held-out pairs) by more than a Spearman can: refused, and the incumbent stays promoted
    second = run(storage, tmp_path, TINY.__class__(**{**TINY.__dict__, "tolerance": -1.01,
                                                      "quantize": False, "seed": 1}),
                 augmentation_curve=[0.0, 1.0])
    assert [p["multiple"] for p in second.augmentation_curve] == [0.0, 1.0]
    assert [p["train_augmented"] for p in second.augmentation_curve] == [0, m["n_train"]]
    for point in second.augmentation_curve:
        lo, hi = point["spearman_cross_vs_teacher_ci95"]
        assert -1 <= lo <= hi <= 1
    assert Path(second.report["augmentation_curve"]).stat().st_size > 0
    decision = second.decision
    assert decision["promoted"] is False and decision["incumbent_version"] == first.version
    # the incumbent's students, re-scored from ONNX on the same split, score what they scored
    assert decision["student"] == "two_tower" == registry.GATE_STUDENT
    assert decision["incumbent"] == pytest.approx(m["two_tower"]["spearman_vs_labels"], abs=1e-3)
    for kind in ("two_tower", "cross"):
        assert decision["students"][kind]["incumbent"] == pytest.approx(m[kind]["spearman_vs_labels"], abs=1e-3)
        assert decision["students"][kind]["candidate"] == second.metrics[kind]["spearman_vs_labels"]
    statuses = {r["version"]: r["status"] for r in registry.models(storage)}
    assert statuses == {first.version: "promoted", second.version: "rejected"}

    # the two-tower decides: it scores every pair; the cross-encoder's share is measured at publish
    test = [e for e in labelled if e.split == "test"]
    tower, cross = (m[k]["spearman_vs_labels"] for k in ("two_tower", "cross"))
    weak_cross = {"two_tower": {"spearman_vs_labels": tower}, "cross": {"spearman_vs_labels": cross - 1}}
    assert _gate(storage, "v-weak-cross", weak_cross, first.artifacts, test, TINY, 0.0)["promoted"] is True
    weak_tower = {"two_tower": {"spearman_vs_labels": tower - 0.5}, "cross": {"spearman_vs_labels": 1.0}}
    assert _gate(storage, "v-weak-tower", weak_tower, first.artifacts, test, TINY, 0.0)["promoted"] is False


def test_gate_rule():
    assert registry.gate(0.5, None, 0.01)
    assert registry.gate(0.795, 0.8, 0.01) and not registry.gate(0.7, 0.8, 0.01)


def test_teacher_reads_the_two_items_field_by_field(storage):
    seed_labels(storage, n_labelled=40)
    example = load_labelled(storage)[0]
    text = teacher_text(example)
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert list(lines) == ["category", "brand", "color", "condition", "model", "title"]
    assert lines["category"] == f"{example.fields_a['category']} | {example.fields_b['category']}"
    assert lines["title"] == f"{example.fields_a['title']} | {example.fields_b['title']}"
    # a missing field is shown as missing, not dropped (the columns stay aligned)
    assert aligned_pair_text({"category": "lens"}, {"category": "camera", "brand": "Canon"}).splitlines()[1] \
        == "brand: - | Canon"
    # without catalogue rows (e.g. texts from elsewhere) the teacher falls back to the two texts
    bare = PairExample("a", "b", "red case", "phone", example.target, None, 1.0, "train", "x")
    assert teacher_text(bare) == "product A: red case\nproduct B: phone"


def test_cpu_teacher_starts_from_minilm_token_embeddings(tmp_path):
    from transformers import AutoModel, Qwen2ForCausalLM

    path = build_tiny_causal_lm(tmp_path / "t", layers=1, hidden=384, minilm_embeddings=True)
    teacher = Qwen2ForCausalLM.from_pretrained(path).model.embed_tokens.weight
    minilm = AutoModel.from_pretrained(minilm_path()).embeddings.word_embeddings.weight
    assert torch.equal(teacher, minilm)
    with pytest.raises(ValueError, match="hidden=384"):
        build_tiny_causal_lm(tmp_path / "u", layers=1, hidden=64, minilm_embeddings=True)


def test_learning_rate_warms_up_then_decays_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=100, warmup=0.1)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] < 0.01


def test_data_parallel_run_under_torchrun(tmp_path):
    """Two CPU processes (gloo) train one model: each takes half of every epoch's batches, only
    the main one reads chDB and writes the model, the registry row and the report."""
    import json
    import os
    import subprocess
    import sys

    from streams.core.config import Settings
    from streams.core.embedded_broker import free_port
    from streams.core.storage import open_storage

    settings = Settings(data_dir=str(tmp_path))
    storage = open_storage(settings)
    seed_labels(storage, n_labelled=160)
    storage.close()
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "streams.cli", "distill", "--backbone", "tiny", "--teacher", "tiny", "--teacher-epochs", "2",
         "--epochs", "1",
         "--augment", "1", "--max-length", "48", "--json"],
        env={**os.environ, "PAIRSTREAM_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"version"')]
    assert len(reports) == 1  # the replica trains, the main process reports
    result = RunResult(**reports[0])  # the CLI's --json is the run's result, field for field
    assert result.processes == 2
    assert result.decision["promoted"] is True
    assert max(result.metrics["onnx_parity_max_abs"].values()) <= 1e-4
    storage = open_storage(settings)
    try:
        assert [r["version"] for r in registry.models(storage)] == [result.version]
    finally:
        storage.close()
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith("v")] == [result.version]
    # the teacher saw 131 training pairs in 9 batches of 16: 4 steps per process per epoch
    # (one log line per epoch, from the main process; no progress bars outside a terminal)
    assert re.search(r"teacher epoch 1/2: loss [\d.]+ over \d+ rows \(4 batches\)", proc.stderr), proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "it/s]" not in proc.stderr


def test_max_test_keeps_the_same_held_out_pairs_every_run(storage):
    """A CPU round may score a capped held-out set (the demo does: every student scores every
    held-out pair): the same pairs each run, so the gate compares runs like for like."""
    from training.config import DistillConfig
    from training.pipeline import _read

    seed_labels(storage, n_labelled=160)
    whole, _, _ = _read(storage, DistillConfig(), [1.0])
    capped, _, _ = _read(storage, DistillConfig(max_test=5), [1.0])
    again, _, _ = _read(storage, DistillConfig(max_test=5), [1.0])
    held_out = [(e.item_a, e.item_b) for e in capped if e.split == "test"]
    assert len(held_out) == 5 < sum(e.split == "test" for e in whole)
    assert held_out == [(e.item_a, e.item_b) for e in again if e.split == "test"]
    train = [(e.item_a, e.item_b) for e in whole if e.split == "train"]
    assert [(e.item_a, e.item_b) for e in capped if e.split == "train"] == train


def test_a_run_without_a_teacher_trains_the_students_on_the_labels_alone(storage, tmp_path):
    """``--teacher-epochs 0`` (the fast first run): no teacher is built or fitted, nothing is
    augmented, and the students still learn, export and pass the gate."""
    seed_labels(storage, n_labelled=160)
    result = run(storage, tmp_path, TINY.__class__(**{**TINY.__dict__, "teacher_epochs": 0, "quantize": False}))
    m = result.metrics
    assert m["n_augmented"] == 0 and m["n_train"] > 0
    assert m["teacher"]["spearman_vs_labels"] == pytest.approx(1.0)  # "the teacher" is the labels
    assert np.isfinite(m["cross"]["spearman_vs_labels"]) and np.isfinite(m["two_tower"]["spearman_vs_labels"])
    assert result.decision["promoted"] is True
    assert Path(result.artifacts["cross_encoder"]).stat().st_size > 0


def test_max_labels_caps_training_pairs_the_same_way_every_run(storage):
    """The cap counts pairs, not examples (a pair may hold a worthy rule's label beside
    behaviour's: both stay), manually labelled pairs first, the same pairs every run, and the
    held-out splits untouched."""
    from streams.core.storage.labels import LabelRow, write_labels
    from training.pipeline import _read

    seed_labels(storage, n_labelled=160)
    whole, _, _ = _read(storage, DistillConfig(max_labels=0, hard_negatives=0), [1.0])
    pair = next((e.item_a, e.item_b) for e in whole if e.split == "train")
    write_labels(storage, [LabelRow(*pair, 9.0, "medium", "manual", "person", "", "")])
    capped, _, _ = _read(storage, DistillConfig(max_labels=20, hard_negatives=0), [1.0])
    again, _, _ = _read(storage, DistillConfig(max_labels=20, hard_negatives=0), [1.0])
    chosen = {(e.item_a, e.item_b) for e in capped if e.split == "train"}
    assert len(chosen) == 20 and pair in chosen  # a manually labelled pair comes first
    assert chosen == {(e.item_a, e.item_b) for e in again if e.split == "train"}
    def held(examples):
        return [(e.item_a, e.item_b, e.source) for e in examples if e.split != "train"]

    assert held(capped) == held(whole)
