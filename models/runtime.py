"""Serve the students with ONNX Runtime: CUDA where present, CPU otherwise (logged).

Scores are the expected value of the 10-bin distribution (1..10), like the teacher's.
``Students`` is the unit a worker loads and swaps on a hot reload: both students of one model
version, from the artifacts the registry records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from models.scale import SCORE_BINS

log = logging.getLogger(__name__)
BINS = np.asarray(SCORE_BINS, np.float32)


def session(path: str | Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # onnxruntime-gpu lists CUDA even where no GPU or CUDA libraries exist (then it logs an
    # error and falls back); ask for it only where torch sees a GPU
    sess = ort.InferenceSession(str(path), options, providers=providers())
    log.info("ONNX Runtime %s on %s (threads %s)", Path(path).name, sess.get_providers()[0],
             threads or "default")
    return sess


def providers() -> list[str]:
    """CUDA first where a GPU is present and onnxruntime-gpu offers it, then CPU."""
    import onnxruntime as ort
    import torch

    wanted = ["CUDAExecutionProvider"] if torch.cuda.is_available() else []
    return [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]


def expected(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    return p @ BINS


class OnnxCrossEncoder:
    def __init__(self, model_dir: str | Path, tokenizer, file: str = "cross_encoder.onnx",
                 max_length: int = 96, threads: int = 0):
        self.session = session(Path(model_dir) / file, threads)
        self.tokenizer = tokenizer
        self.max_length = max_length

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            enc = self.tokenizer([a for a, _ in chunk], [b for _, b in chunk], padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="np")
            feeds = {"input_ids": enc["input_ids"].astype(np.int64),
                     "attention_mask": enc["attention_mask"].astype(np.int64),
                     "token_type_ids": enc.get("token_type_ids", np.zeros_like(enc["input_ids"])).astype(np.int64)}
            out.append(expected(self.session.run(None, feeds)[0]))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


class OnnxTwoTower:
    def __init__(self, model_dir: str | Path, tokenizer, max_length: int = 48, threads: int = 0):
        self.tower = session(Path(model_dir) / "item_encoder.onnx", threads)
        self.head = session(Path(model_dir) / "pair_head.onnx", threads)
        self.tokenizer = tokenizer
        self.max_length = max_length

    def embed(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            out.append(self.tower.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                             "attention_mask": enc["attention_mask"].astype(np.int64)})[0])
        return np.concatenate(out)

    def score_embeddings(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return expected(self.head.run(None, {"u": u.astype(np.float32), "v": v.astype(np.float32)})[0])


class Students:
    """Both students of one model version, ready to score (see ``export_students``)."""

    def __init__(self, version: str, artifacts: dict[str, str], threads: int = 0,
                 int8: bool = False, cross: bool = True):
        """``cross=False``: the two-tower only (a lookup process computes unpublished pairs with
        it and never runs the cross-encoder: half the memory and load time)."""
        from transformers import AutoTokenizer

        self.version = version
        self.artifacts = dict(artifacts)
        self.max_length = int(artifacts.get("max_length", 96))
        tokenizer = AutoTokenizer.from_pretrained(artifacts["tokenizer"])
        self._cross: OnnxCrossEncoder | None = None
        if cross:
            path = Path(artifacts["cross_encoder_int8" if int8 and "cross_encoder_int8" in artifacts
                                  else "cross_encoder"])
            self._cross = OnnxCrossEncoder(path.parent, tokenizer, file=path.name,
                                          max_length=self.max_length, threads=threads)
        self.two_tower = OnnxTwoTower(Path(artifacts["item_encoder"]).parent, tokenizer,
                                      max_length=self.max_length, threads=threads)
        self.provider = self.two_tower.head.get_providers()[0]

    @property
    def cross(self) -> OnnxCrossEncoder:
        if self._cross is None:
            raise RuntimeError(f"students {self.version} were loaded without their cross-encoder")
        return self._cross
