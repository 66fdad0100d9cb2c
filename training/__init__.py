"""Dataset assembly, teacher fine-tuning, distillation, evaluation, promotion, the job entry.

Imports ``models`` and the Faust-free storage layer, never Faust (DESIGN.md)."""


def held_out(item_a: str, item_b: str) -> bool:
    """True for a pair the training job never fits on (its validation or test split): what
    the publisher may compare the model with behaviour on without the model having seen it."""
    from .dataset import split_of

    return split_of(item_a, item_b) != "train"
