"""Test helpers: a catalogue with pair counts and labels, and tiny students in the registry.

The students are untrained tiny BERTs exported exactly like a training run exports them
(``export_students``), so everything downstream of training (publishing, hot reload, the
lookup API) runs on real ONNX files in seconds."""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path

import pyarrow as pa
import torch

from models.onnx_export import export_students
from models.students import CrossEncoderStudent, TwoTowerStudent, load_encoder
from streams.core.storage import registry
from streams.core.storage.labels import LabelRow, write_labels
from streams.dev.synthetic import generate
from streams.ingest.catalogue import Catalogue


def seed_pairs(storage, n_items: int = 120, n_pairs: int = 300, seed: int = 3) -> dict:
    """Items, cross-category pair counts (some below the low tier) and a few labels."""
    items, _ = generate(n_items, 10, 10, seed=seed)
    Catalogue().upsert(storage, items)
    rng = random.Random(seed)
    pairs = set()
    while len(pairs) < n_pairs:
        x, y = rng.sample(items, 2)
        if x.category != y.category:
            pairs.add(tuple(sorted((x.item_id, y.item_id))))
    pairs = sorted(pairs)
    counts = [rng.choice([1, 2, 3, 5, 30]) for _ in pairs]
    day = dt.date(2026, 6, 1)
    storage.insert_arrow("pair_counts", pa.table({
        "item_a": [a for a, _ in pairs], "item_b": [b for _, b in pairs],
        "day": pa.array([day] * len(pairs)), "count": pa.array(counts, pa.uint64())}))
    below = [p for p, c in zip(pairs, counts) if c < 3]
    labelled = below[:5]  # labelled pairs are candidates whatever their count
    write_labels(storage, [LabelRow(a, b, 6.0, "low", "llm", "heuristic", "h", "v1") for a, b in labelled])
    manual = [p for p, c in zip(pairs, counts) if c >= 3][0]
    write_labels(storage, [LabelRow(*manual, 2.0, "low", "manual", "", "person", "")])
    eligible = {p for p, c in zip(pairs, counts) if c >= 3} | set(labelled)
    return {"items": items, "pairs": pairs, "counts": counts, "eligible": eligible, "manual": manual}


_EXPORTED: dict[int, tuple[str, dict]] = {}  # seed -> (version, artifacts): one export per process


def tiny_students(storage, out_dir, seed: int = 0, promote: bool = True) -> dict:
    """A tiny cross-encoder and two-tower, registered (promoted by default). Exported once per
    seed and process under ``out_dir`` of the first call (the files are only read after), so a
    suite pays for each export once."""
    if seed not in _EXPORTED:
        _EXPORTED[seed] = _export(Path(out_dir), seed)
    version, artifacts = _EXPORTED[seed]
    metrics = {"cross": {"spearman_vs_labels": 0.5}}
    if promote:
        registry.promote(storage, version, metrics, artifacts, time.time())
    else:
        registry.record(storage, version, "candidate", metrics, artifacts, time.time())
    return {"version": version, "artifacts": artifacts}


def _export(out_dir: Path, seed: int) -> tuple[str, dict]:
    torch.manual_seed(seed)
    cross = CrossEncoderStudent(load_encoder("tiny")[0]).eval()
    encoder, tokenizer = load_encoder("tiny")
    tower = TwoTowerStudent(encoder).eval()
    torch.manual_seed(seed + 100)  # different heads per version: different scores
    for module in (cross.head, tower.head):
        for param in module.parameters():
            torch.nn.init.normal_(param, std=0.5)
    version = time.strftime("v%Y%m%d-%H%M%S", time.gmtime()) + f"-t{seed}"
    artifacts, parity = export_students(cross, tower, tokenizer, out_dir / version, 32, seed)
    assert max(parity.values()) <= 1e-4
    return version, artifacts
