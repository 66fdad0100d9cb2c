"""Training losses, one per file (each docstring cites its source)."""

from models.losses.distillation import DistillationLoss

__all__ = ["DistillationLoss"]
