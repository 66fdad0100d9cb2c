"""Training losses, one per file (each docstring cites its source)."""

from .distillation import DistillationLoss

__all__ = ["DistillationLoss"]
