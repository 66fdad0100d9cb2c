"""The teacher: a Qwen2-architecture causal LM with a classification head over the 10 bins.

Trained on soft targets (cross-entropy against a distribution, i.e. KL up to a constant);
its score is the expected value of its distribution. On a CPU: a tiny Qwen2 config (2 layers,
hidden 384) with the MiniLM vocabulary and MiniLM's pretrained token embeddings
(``models.local``), fully fine-tuned. On a GPU with a real checkpoint from a local path: LoRA
adapters via ``peft`` (the ``gpu`` extra), the base weights frozen. Its input lists the two
items field by field (``models.text.aligned_pair_text``).

A custom loop rather than ``transformers.Trainer``: the loss takes soft targets and per-row
weights, and the loop is twenty lines; Trainer would need a subclass for exactly that. The
learning rate warms up and decays (cosine): at a constant rate a from-scratch model stalled
at the label marginal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from models.local import build_tiny_causal_lm, load_tokenizer
from models.text import aligned_pair_text
from training import distributed
from training.batches import minibatches, targets, warmup_cosine, weights
from training.epochs import run_epochs

log = logging.getLogger(__name__)


def teacher_text(example) -> str:
    """Field by field where the catalogue rows are known, else the two item texts."""
    if example.fields_a and example.fields_b:
        return aligned_pair_text(example.fields_a, example.fields_b)
    return f"product A: {example.text_a}\nproduct B: {example.text_b}"


def wants_lora(teacher_path: str | None, device_type: str, lora: bool | None = None) -> bool:
    """LoRA adapters only for a pretrained checkpoint (``--teacher PATH``) on a GPU, unless asked
    outright: the tiny teacher is built from scratch, and a frozen random base would learn nothing."""
    if lora is not None:
        return lora
    return bool(teacher_path) and device_type == "cuda"


class Teacher:
    def __init__(self, model, tokenizer, device: str, max_length: int = 128):
        self.model, self.tokenizer, self.device, self.max_length = model, tokenizer, device, max_length

    @classmethod
    def build(cls, path: str | None, workdir: Path, lora: bool | None = None, seed: int = 0,
              max_length: int = 128) -> "Teacher":
        from transformers import AutoModelForSequenceClassification

        device = distributed.device()
        with_lora = wants_lora(path, device.type, lora)
        if not path:
            with distributed.accelerator().main_process_first():  # one writer, the others read it
                path = str(build_tiny_causal_lm(Path(workdir) / "tiny-qwen2-teacher-384x2", seed=seed,
                                                layers=2, hidden=384, minilm_embeddings=True))
        tokenizer = load_tokenizer(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=10)
        model.config.pad_token_id = tokenizer.pad_token_id
        if with_lora:
            from peft import LoraConfig, TaskType, get_peft_model

            model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=16, lora_alpha=32,
                                                     lora_dropout=0.05))
            log.info("teacher: LoRA adapters on %s", path)
        return cls(model.to(device), tokenizer, device, max_length)

    def _inputs(self, batch):
        enc = self.tokenizer([teacher_text(e) for e in batch], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k != "token_type_ids"}

    def fit(self, train, epochs: int = 3, lr: float = 5e-4, batch_size: int = 16, seed: int = 0) -> list[float]:
        """Soft-target training (data-parallel under ``accelerate launch``, see
        ``training.distributed``); returns the mean loss of each epoch on this process."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        model, optimizer = distributed.prepare(self.model, torch.optim.AdamW(params, lr=lr, weight_decay=0.01))
        self.device = distributed.device()
        schedule = warmup_cosine(optimizer, epochs * distributed.steps_per_epoch(len(train), batch_size))
        model.train()

        def step(batch) -> float:
            logits = model(**self._inputs(batch)).logits
            w = weights(batch).to(self.device)
            loss_rows = -(targets(batch).to(self.device) * torch.log_softmax(logits, -1)).sum(-1)
            loss = (w * loss_rows).sum() / w.sum()
            optimizer.zero_grad()
            distributed.backward(loss)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            return loss.item()

        history = run_epochs("teacher", epochs, lambda epoch: distributed.shard(
            list(minibatches(train, batch_size, shuffle=True, seed=seed + epoch))), step)
        self.model = distributed.unwrap(model)
        self.model.eval()
        return history

    @torch.inference_mode()
    def predict(self, examples, batch_size: int = 64) -> np.ndarray:
        """P(score = 1..10) per example."""
        self.model.eval()
        out = []
        for batch in minibatches(examples, batch_size, shuffle=False, seed=0):
            out.append(torch.softmax(self.model(**self._inputs(batch)).logits.float(), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)
