"""``training_runs``: one row per training run (queued / running / succeeded / failed).

The trigger (``streams.retraining.trigger``) reads it to keep one run at a time and to wait
after a failure; on-call reads it (``pairstream models runs``) and the metrics mirror it.
"""

from __future__ import annotations

import time
import uuid

import pyarrow as pa

from streams.core.storage.base import Storage, timestamp_array

ACTIVE = ("queued", "running")
# a run whose process ended without finishing it (its worker was killed): neither active nor a
# failure of the run itself, so it holds back neither the next run nor the retry window
ABANDONED = "abandoned"


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


def running(storage: Storage) -> list[dict]:
    """Runs whose newest status is ``running``; times as unix seconds."""
    table = storage.query_arrow(
        f"""SELECT run_id, trigger, toFloat64(started_at) AS started_at
            FROM {storage.table('training_runs')} FINAL WHERE status = 'running'""")
    return table.to_pylist() if table.num_rows else []
