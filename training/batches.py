"""Tokenised mini-batches for the teacher and the students."""

from __future__ import annotations

import numpy as np
import torch


def label_bins(examples) -> torch.Tensor:
    return torch.tensor([int(round(e.label)) - 1 if e.label is not None else -1 for e in examples])


def targets(examples) -> torch.Tensor:
    return torch.tensor(np.stack([e.target for e in examples]), dtype=torch.float32)


def weights(examples) -> torch.Tensor:
    return torch.tensor([e.weight for e in examples], dtype=torch.float32)


def pair_inputs(tokenizer, examples, max_length: int, device="cpu") -> dict:
    enc = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], padding=True,
                    truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def item_inputs(tokenizer, texts, max_length: int, device="cpu") -> dict:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def minibatches(items, size: int, shuffle: bool, seed: int):
    order = np.random.default_rng(seed).permutation(len(items)) if shuffle else np.arange(len(items))
    for i in range(0, len(items), size):
        yield [items[j] for j in order[i:i + size]]


def warmup_cosine(optimizer, total_steps: int, warmup: float = 0.06):
    """Linear warm-up then cosine decay to zero: a from-scratch transformer diverges or stalls
    at a constant rate, and a fine-tuned one forgets less (Loshchilov & Hutter, SGDR, 2017)."""
    import math

    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
