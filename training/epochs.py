"""The epoch loop the teacher and both students share: shuffled minibatches per epoch, a
progress bar where a person watches a terminal, and one log line per epoch (mean loss, rows,
seconds) wherever the output goes. A training run's log file once held every refresh of the
bars as a carriage-return line, thousands per run, and no loss at all."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from tqdm import tqdm

from training import distributed

log = logging.getLogger(__name__)

Row = TypeVar("Row")


def on_a_terminal() -> bool:
    """Progress bars only for a person at a terminal, and only from the main process."""
    return distributed.is_main() and sys.stderr.isatty()


def progress(batches: Sequence[Row], desc: str) -> Iterable[Row]:
    return tqdm(batches, desc=desc, leave=False, disable=not on_a_terminal())


def run_epochs(name: str, epochs: int, batches_of: Callable[[int], Sequence[Sequence]],
               step: Callable[[Sequence], float]) -> list[float]:
    """Call ``step(batch)`` (one optimiser step; returns the batch's mean loss) on every batch of
    ``batches_of(epoch)``; returns each epoch's mean loss per row on this process."""
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        total, rows = 0.0, 0
        batches = batches_of(epoch)
        for batch in progress(batches, f"{name} epoch {epoch + 1}/{epochs}"):
            total += step(batch) * len(batch)
            rows += len(batch)
        history.append(total / max(rows, 1))
        if distributed.is_main():
            log.info("%s epoch %d/%d: loss %.4f over %d rows (%d batches) in %.1fs", name, epoch + 1, epochs,
                     history[-1], rows, len(batches), time.perf_counter() - started)
    return history


def quiet_when_logged() -> None:
    """Outside a terminal (a run's log file): one line per epoch from ``training`` at INFO, and
    no progress bars or load reports from transformers and the hub."""
    logging.getLogger("training").setLevel(logging.INFO)
    if sys.stderr.isatty():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
