"""Distillation loss over the 10 score bins: soft teacher targets + the label + the score.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
         + beta  * CE(student, label bin)                 (labelled rows only)
         + gamma * MSE(E_student[score], E_teacher[score])

- The temperature-scaled KL term and its T^2 factor (which keeps its gradients on the same
  scale as the hard-label term when T changes) are from Hinton, Vinyals and Dean,
  "Distilling the Knowledge in a Neural Network", arXiv:1503.02531, 2015.
- Mixing the distillation term with the task loss on true labels follows the same paper
  (a weighted average of the two objectives) and DistilBERT's triple loss (Sanh et al.,
  arXiv:1910.01108, 2019).
- The MSE between expected scores matches what the re-ranker consumes (a 1..10 number) and is
  the regression analogue of MarginMSE for cross-encoders (Hofstätter et al., "Improving
  Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation",
  arXiv:2010.02666, 2020).

Teacher targets may be given as probabilities (already a distribution, e.g. the teacher's
output or a smoothed label) instead of logits; then the temperature is applied by
renormalising ``p ** (1 / T)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.scale import SCORE_BINS

BINS = torch.tensor(SCORE_BINS, dtype=torch.float32)


def expected_score(probs: torch.Tensor) -> torch.Tensor:
    return (probs * BINS.to(probs.device)).sum(-1)


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log p / T): the temperature applied to a distribution given as probabilities."""
    return torch.softmax(torch.log(probs.clamp_min(1e-8)) / temperature, dim=-1)


class DistillationLoss(nn.Module):
    def __init__(self, alpha: float = 0.5, beta: float = 0.3, gamma: float = 0.2, temperature: float = 2.0):
        super().__init__()
        self.alpha, self.beta, self.gamma, self.temperature = alpha, beta, gamma, temperature

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                label_bins: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> dict:
        """``label_bins``: 0..9, or -1 where a row has no label (teacher-augmented rows)."""
        t = self.temperature
        n = student_logits.shape[0]
        weights = torch.ones(n, device=student_logits.device) if weights is None else weights
        log_student_t = F.log_softmax(student_logits / t, dim=-1)
        kd = F.kl_div(log_student_t, sharpen(teacher_probs, t), reduction="none").sum(-1) * t * t
        student_probs = torch.softmax(student_logits, dim=-1)
        mse = (expected_score(student_probs) - expected_score(teacher_probs)) ** 2
        ce = torch.zeros(n, device=student_logits.device)
        if label_bins is not None:
            has = label_bins >= 0
            if has.any():
                ce = torch.where(has, F.cross_entropy(student_logits, label_bins.clamp_min(0),
                                                      reduction="none"), ce)
        total = weights * (self.alpha * kd + self.beta * ce + self.gamma * mse)
        norm = weights.sum().clamp_min(1e-8)
        return {"loss": total.sum() / norm, "kd": (weights * kd).sum() / norm,
                "ce": (weights * ce).sum() / norm, "mse": (weights * mse).sum() / norm}
