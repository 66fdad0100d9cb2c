"""``training_runs``: one row per training run (queued / running / succeeded / failed).

The trigger reads it to keep one run at a time and to wait after a failure; on-call reads it
(``pairstream models runs``) and the metrics mirror it.
"""

from __future__ import annotations

import time
import uuid

import pyarrow as pa

from streams.storage.base import Storage, timestamp_array

ACTIVE = ("queued", "running")


def new_run_id() -> str:
    return time.strftime("r%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def record(storage: Storage, run_id: str, trigger: str, status: str, started_at: float,
           finished_at: float | None = None, model_version: str = "", promoted: bool = False,
           error: str = "") -> None:
    storage.insert_arrow("training_runs", pa.table({
        "run_id": [run_id], "trigger": [trigger], "status": [status],
        "model_version": [model_version], "promoted": pa.array([int(promoted)], pa.uint8()),
        "error": [error[-2000:]], "started_at": timestamp_array([started_at]),
        "finished_at": timestamp_array([finished_at]) if finished_at else pa.array([None], pa.timestamp("ms", "UTC")),
        "updated_at": timestamp_array([time.time()]),
    }))


def runs(storage: Storage, limit: int = 50) -> list[dict]:
    """Newest first; times as unix seconds."""
    table = storage.query_arrow(
        f"""SELECT run_id, trigger, status, model_version, promoted, error,
                   toFloat64(started_at) AS started_at, toFloat64(finished_at) AS finished_at
            FROM {storage.table('training_runs')} FINAL
            ORDER BY started_at DESC LIMIT {{n:UInt32}}""", {"n": limit})
    return table.to_pylist() if table.num_rows else []


def labels_since(storage: Storage, since: float) -> int:
    return int(storage.query_value(
        f"SELECT count() FROM {storage.table('pair_labels')} "
        "WHERE labelled_at > fromUnixTimestamp64Milli({t:Int64})", {"t": int(since * 1000)}) or 0)


def due(storage: Storage, settings, now: float | None = None) -> str | None:
    """Why a run should start now ('labels' / 'schedule'), or None.

    One at a time: nothing starts while a run is queued or running (unless it is older than
    ``training_timeout_s``: then it is dead). After a failure nothing starts for
    ``training_retry_s``: the next window retries, never a loop."""
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
    if new >= settings.training_min_new_labels:
        return "labels"
    previous = last["started_at"] if last else None
    if settings.training_interval_s > 0 and new > 0 and (
            previous is None or now - previous >= settings.training_interval_s):
        return "schedule"
    return None
