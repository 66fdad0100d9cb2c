"""Dataset assembly, teacher fine-tuning, distillation, evaluation, promotion, the job entry.

Imports ``models`` and the Faust-free storage layer, never Faust (docs/development.md, "Layout":
the import rule). The job entry for ``streams``, and all it may import of ``training``: ``run`` (one training round),
``DistillConfig`` (its options), ``RunResult`` (what a run returns), ``held_out`` (the split
rule) and ``is_main_process``. ``run`` and ``DistillConfig`` load on first use, so importing
``training`` (the CLI's defaults, the publisher's split rule) does not import torch."""

from training.result import RunResult

__all__ = ["DistillConfig", "RunResult", "held_out", "is_main_process", "run"]


def __getattr__(name: str):
    if name == "run":
        from training.pipeline import run

        return run
    if name == "DistillConfig":
        from training.config import DistillConfig

        return DistillConfig
    raise AttributeError(f"module 'training' has no attribute {name!r}")


def is_main_process() -> bool:
    """False in the replica processes of a data-parallel run (``accelerate launch``, ``torchrun``):
    only the main one reads and writes ClickHouse."""
    from training.distributed import is_main

    return is_main()


def held_out(item_a: str, item_b: str) -> bool:
    """True for a pair the training job never fits on (its validation or test split): what
    the publisher may compare the model with behaviour on without the model having seen it."""
    from training.dataset import split_of

    return split_of(item_a, item_b) != "train"
