"""When to train: enough new labels, or the schedule; one run at a time, and a pause after a
failure so that a broken run is retried in the next window, never in a loop."""

from __future__ import annotations

import time

from streams.core.storage import Storage
from streams.core.storage.runs import ACTIVE, runs


def labels_since(storage: Storage, since: float) -> int:
    return int(storage.query_value(
        f"SELECT count() FROM {storage.table('pair_labels')} "
        "WHERE labelled_at > fromUnixTimestamp64Milli({t:Int64})", {"t": int(since * 1000)}) or 0)


def due(storage: Storage, settings, now: float | None = None) -> str | None:
    """Why a run should start now ('labels' / 'schedule'), or None.

    One at a time: nothing starts while a run is queued or running (unless it is older than
    ``training_timeout_s``: then it is dead). After a failure nothing starts for
    ``training_retry_s``: the next window retries, never a loop. Nothing starts before
    ``training_min_labels`` labels exist in all: a fresh worker's schedule would otherwise fire on
    its first few labels, fail for want of a test split, and wait out the retry window."""
    now = time.time() if now is None else now
    history = runs(storage, 20)
    last = history[0] if history else None
    if last and last["status"] in ACTIVE and now - last["started_at"] < settings.training_timeout_s:
        return None
    failed_at = last and last["status"] == "failed" and (last["finished_at"] or last["started_at"])
    if failed_at and now - failed_at < settings.training_retry_s:
        return None
    done = [r for r in history if r["status"] == "succeeded"]
    since = done[0]["started_at"] if done else 0.0
    new = labels_since(storage, since)
    if new < settings.training_min_labels and (not done or labels_since(storage, 0.0) < settings.training_min_labels):
        return None  # a run on a handful of labels fails or learns nothing, then blocks the retry window
    if new >= settings.training_min_new_labels:
        return "labels"
    previous = last["started_at"] if last else None
    if settings.training_interval_s > 0 and new > 0 and (
            previous is None or now - previous >= settings.training_interval_s):
        return "schedule"
    return None
