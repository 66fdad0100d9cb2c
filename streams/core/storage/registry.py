"""The ``models`` registry and the promotion gate.

A run registers its bundle as ``candidate``; the gate compares it with the promoted bundle on
the *current* held-out split (the promoted students are re-scored from their ONNX files, so
both bundles are judged on the same pairs) and promotes only if the candidate's two-tower is
not worse than ``tolerance`` on the gate metric; otherwise it is ``rejected``. The two-tower
decides because it scores every published pair and every pair the lookup API computes; the
cross-encoder's share of the published score is measured at each publish
(``streams.publishing.cross_mix``), so a weaker cross-encoder costs nothing there. Both
students' comparisons are recorded with the decision. One bundle is ``promoted`` at a
time; the one it replaces becomes ``retired`` (kept for rollback).
"""

from __future__ import annotations

import json
import time

import pyarrow as pa

from streams.core.storage.base import timestamp_array

KIND = "students"
GATE_METRIC = "spearman_vs_labels"
GATE_STUDENT = "two_tower"


def record(storage, version: str, status: str, metrics: dict, artifacts: dict[str, str],
           created_at: float | None = None) -> None:
    now = time.time()
    storage.insert_arrow("models", pa.table({
        "version": [version], "kind": [KIND], "status": [status],
        "metrics": [json.dumps(metrics, sort_keys=True)],
        "artifacts": pa.array([list(artifacts.items())], pa.map_(pa.string(), pa.string())),
        "created_at": timestamp_array([created_at or now]), "updated_at": timestamp_array([now]),
    }))


def models(storage) -> list[dict]:
    table = storage.query_arrow(
        f"SELECT version, status, metrics, artifacts, created_at, updated_at "
        f"FROM {storage.table('models')} FINAL WHERE kind = {{kind:String}} ORDER BY created_at",
        {"kind": KIND})
    rows = table.to_pylist() if table.num_rows else []
    for row in rows:
        row["metrics"] = json.loads(row["metrics"])
        row["artifacts"] = dict(row["artifacts"])
    return rows


def promoted(storage) -> dict | None:
    current = [m for m in models(storage) if m["status"] == "promoted"]
    return current[-1] if current else None


def gate(candidate: float, incumbent: float | None, tolerance: float) -> bool:
    """Promote when there is no incumbent or the candidate is at most ``tolerance`` worse."""
    return incumbent is None or candidate >= incumbent - tolerance


def promote(storage, version: str, metrics: dict, artifacts: dict, created_at: float) -> None:
    old = promoted(storage)
    if old is not None:
        record(storage, old["version"], "retired", old["metrics"], old["artifacts"],
               old["created_at"].timestamp())
    record(storage, version, "promoted", metrics, artifacts, created_at)


def get(storage, version: str) -> dict | None:
    found = [m for m in models(storage) if m["version"] == version]
    return found[-1] if found else None


def restore(storage, version: str) -> dict:
    """Rollback: ``version`` becomes the promoted bundle again, the current one ``retired``."""
    target = get(storage, version)
    if target is None:
        raise LookupError(f"no model {version!r} in the registry")
    current = promoted(storage)
    if current is not None and current["version"] != version:
        record(storage, current["version"], "retired", current["metrics"], current["artifacts"],
               current["created_at"].timestamp())
    record(storage, version, "promoted", target["metrics"], target["artifacts"],
           target["created_at"].timestamp())
    return target
