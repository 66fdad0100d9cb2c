"""Distil the teacher into the two students (``models.students``) with ``DistillationLoss``.

Custom loop for the same reason as the teacher's: soft targets, masked label term, row
weights. The encoder learns at ``lr``, the fresh head ten times faster; both warm up and
decay (cosine), as BERT fine-tuning usually does.
"""

from __future__ import annotations

import torch

from models.losses import DistillationLoss
from models.scale import SCORE_BINS
from models.students import CrossEncoderStudent, TwoTowerStudent, load_encoder
from training import distributed
from training.batches import item_inputs, label_bins, minibatches, pair_inputs, warmup_cosine, weights
from training.epochs import run_epochs


def _optimizer(model, lr: float):
    head = [p for n, p in model.named_parameters() if n.startswith("head")]
    body = [p for n, p in model.named_parameters() if not n.startswith("head")]
    return torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": lr * 10}],
                             weight_decay=0.01)


def _forward(kind: str, model, tokenizer, batch, max_length: int, device):
    if kind == "cross":
        enc = pair_inputs(tokenizer, batch, max_length, device)
        return model(enc["input_ids"], enc["attention_mask"],
                     enc.get("token_type_ids", torch.zeros_like(enc["input_ids"])))
    a = item_inputs(tokenizer, [e.text_a for e in batch], max_length, device)
    b = item_inputs(tokenizer, [e.text_b for e in batch], max_length, device)
    return model(a["input_ids"], a["attention_mask"], b["input_ids"], b["attention_mask"])


def train_student(kind: str, train, teacher_probs, backbone: str, loss: DistillationLoss,
                  epochs: int = 3, lr: float = 5e-5, batch_size: int = 16, max_length: int = 96,
                  seed: int = 0):
    """Returns (model, tokenizer, per-epoch mean losses of this process) with the model back on
    the CPU, unwrapped, for export. ``teacher_probs`` aligns with ``train``. Data-parallel under
    ``accelerate launch`` (``training.distributed``)."""
    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder(backbone)
    model = CrossEncoderStudent(encoder) if kind == "cross" else TwoTowerStudent(encoder)
    wrapped, optimizer = distributed.prepare(model, _optimizer(model, lr))
    device = distributed.device()
    schedule = warmup_cosine(optimizer, epochs * distributed.steps_per_epoch(len(train), batch_size))
    rows = list(zip(train, torch.tensor(teacher_probs, dtype=torch.float32)))
    wrapped.train()

    def step(chunk) -> float:
        batch = [e for e, _ in chunk]
        logits = _forward(kind, wrapped, tokenizer, batch, max_length, device)
        parts = loss(logits, torch.stack([t for _, t in chunk]).to(device), label_bins(batch).to(device),
                     weights(batch).to(device))
        optimizer.zero_grad()
        distributed.backward(parts["loss"])
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        return parts["loss"].item()

    history = run_epochs(f"{kind} student", epochs, lambda epoch: distributed.shard(
        list(minibatches(rows, batch_size, shuffle=True, seed=seed + epoch))), step)
    model = distributed.unwrap(wrapped).cpu()
    model.eval()
    return model, tokenizer, history


@torch.inference_mode()
def predict_scores(kind: str, model, tokenizer, examples, max_length: int = 96, batch_size: int = 64):
    """Expected 1..10 score per example (torch path; serving uses ONNX)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    bins = torch.tensor(SCORE_BINS, dtype=torch.float32)
    for batch in minibatches(examples, batch_size, shuffle=False, seed=0):
        out.append(torch.softmax(_forward(kind, model, tokenizer, batch, max_length, device), -1).cpu() @ bins)
    return torch.cat(out).numpy() if out else torch.zeros(0).numpy()
