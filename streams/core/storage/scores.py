"""Versioned score tables: writing a score version, exposing it atomically, rollback, cleanup.

A *score version* is one publish of one model version (``<model_version>.p<UTC stamp>``); its
rows live in their own partition of ``pair_scores`` / ``item_partners`` / ``item_embeddings``.
A version is written completely, marked ``complete`` in ``score_versions``, and only then the
single-row ``score_pointer`` ('live') is moved to it. The reader views ``pair_scores_latest`` and
``item_partners_latest`` select the pointer's version, so a reader sees the old version or the
new one, never a mix: the pointer row is one insert, and ClickHouse makes one insert visible at
once. Rollback moves the pointer back to an older complete version that is still kept.
"""

from __future__ import annotations

import json
import re
import time

import pyarrow as pa

from streams.core.storage.base import Storage, timestamp_array

LIVE = "live"
# what scored a published pair (its ``scorer`` column); the index keeps the position as a code
SCORERS = ("two_tower", "cross_encoder", "manual")
_VERSION = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def check_version(version: str) -> str:
    """Score versions name partitions in ALTER statements, which take no bound parameters."""
    if not _VERSION.match(version):
        raise ValueError(f"not a valid score version: {version!r}")
    return version


def is_version(version: str) -> bool:
    return bool(_VERSION.match(version))


def published(storage: Storage, score_version: str) -> bool:
    """Whether ``score_version`` was written in full (status ``complete``): what a reader may
    switch to. A version still ``writing`` has rows, but only some of them."""
    table = storage.query_arrow(
        f"SELECT argMax(status, changed_at) AS status FROM {storage.table('score_versions')} "
        f"WHERE score_version = {{v:String}}", {"v": score_version})
    return bool(table.num_rows) and table.column("status")[0].as_py() == "complete"


def new_score_version(model_version: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
    return check_version(f"{model_version}.p{stamp}")


def set_status(storage: Storage, score_version: str, model_version: str, status: str,
               rows: int = 0, detail: str = "") -> None:
    storage.insert_arrow("score_versions", pa.table({
        "score_version": [check_version(score_version)], "model_version": [model_version],
        "status": [status], "rows": pa.array([rows], pa.uint64()), "detail": [detail],
        "changed_at": timestamp_array([time.time()]),
    }))


def versions(storage: Storage) -> list[dict]:
    """Every score version with its status, newest first."""
    table = storage.query_arrow(
        f"SELECT score_version, model_version, status, rows, detail, changed_at "
        f"FROM {storage.table('score_versions')} FINAL ORDER BY score_version DESC")
    return table.to_pylist() if table.num_rows else []


def summary(storage: Storage, score_version: str) -> dict | None:
    """What the publish of ``score_version`` decided (its summary, ``publisher.publish``), or
    None for a version written before summaries were kept (or not complete)."""
    table = storage.query_arrow(
        f"SELECT argMax(detail, changed_at) AS kept FROM {storage.table('score_versions')} "
        "WHERE score_version = {v:String} AND status = 'complete' AND detail != ''",
        {"v": check_version(score_version)})
    detail = table.column("kept")[0].as_py() if table.num_rows else None
    try:
        return json.loads(detail) if detail else None
    except ValueError:
        return None


def live(storage: Storage) -> dict | None:
    """{score_version, model_version} the readers see now, or None before the first publish."""
    table = storage.query_arrow(
        f"SELECT argMax(score_version, changed_at) AS score_version, "
        f"argMax(model_version, changed_at) AS model_version, count() AS n "
        f"FROM {storage.table('score_pointer')} WHERE name = {{name:String}}", {"name": LIVE})
    row = table.to_pylist()[0] if table.num_rows else None
    return None if not row or not row["n"] else {"score_version": row["score_version"],
                                                 "model_version": row["model_version"]}


def point_live(storage: Storage, score_version: str, model_version: str) -> None:
    """Expose ``score_version`` to readers (one single-row insert: atomic)."""
    complete = {v["score_version"] for v in versions(storage) if v["status"] == "complete"}
    if score_version not in complete:
        raise ValueError(f"score version {score_version} is not complete; refusing to expose it")
    storage.insert_arrow("score_pointer", pa.table({
        "name": [LIVE], "score_version": [score_version], "model_version": [model_version],
        "changed_at": timestamp_array([time.time()]),
    }))


def rollback_target(storage: Storage, version: str) -> dict:
    """The newest complete score version of ``version`` (a model or a score version)."""
    for row in versions(storage):
        if row["status"] == "complete" and version in (row["score_version"], row["model_version"]):
            return row
    kept = [v["score_version"] for v in versions(storage) if v["status"] == "complete"]
    raise LookupError(f"no complete score version for {version!r}; kept: {kept}")


SCORED_TABLES = ("pair_scores", "pair_score_updates", "item_partners", "item_embeddings")


def drop_old(storage: Storage, keep: int) -> list[str]:
    """Drop all but the newest ``keep`` complete versions (never the live one), and failed ones."""
    current = live(storage)
    current_version = current["score_version"] if current else None
    rows = versions(storage)
    complete = [r["score_version"] for r in rows if r["status"] == "complete"]
    keep_set = set(complete[:max(keep, 1)]) | {current_version}
    dropped = []
    for row in rows:
        v = row["score_version"]
        if v in keep_set or row["status"] in ("writing", "dropped"):
            continue  # a 'writing' version may be in progress elsewhere
        for table in SCORED_TABLES:
            storage.command(f"ALTER TABLE {storage.table(table)} DROP PARTITION '{check_version(v)}'")
        set_status(storage, v, row["model_version"], "dropped", row["rows"], "rolled off")
        dropped.append(v)
    return dropped


# --- continuous publishing (streams.publishing.refresh) -----------------------------------------
def clock(storage: Storage) -> float:
    """ClickHouse's clock (seconds): refresh watermarks compare with ``created_at`` columns that
    ClickHouse fills, so they are taken on the same clock, not a worker's."""
    return int(storage.query_value("SELECT toUnixTimestamp64Milli(now64(3))") or 0) / 1000.0


def record_refresh(storage: Storage, score_version: str, kind: str, through: float, blend_k: float,
                   pairs: int, new_pairs: int = 0, seconds: float = 0.0) -> None:
    """One publish (``kind`` = publish) or refresh of ``score_version``: behaviour up to
    ``through`` is reflected, blended with ``blend_k``."""
    storage.insert_arrow("score_refreshes", pa.table({
        "score_version": [check_version(score_version)], "kind": [kind],
        "refreshed_through": timestamp_array([through]), "blend_k": pa.array([float(blend_k)], pa.float64()),
        "pairs": pa.array([pairs], pa.uint64()), "new_pairs": pa.array([new_pairs], pa.uint64()),
        "seconds": pa.array([float(seconds)], pa.float64()), "at": timestamp_array([time.time()]),
    }))


def refresh_state(storage: Storage, score_version: str) -> dict | None:
    """{through, blend_k, refreshes, at} of ``score_version``'s newest publish or refresh; None
    for a version published before continuous publishing (no row)."""
    table = storage.query_arrow(
        f"SELECT toUnixTimestamp64Milli(argMax(refreshed_through, at)) AS through, "
        f"argMax(blend_k, at) AS blend_k, countIf(kind = 'refresh') AS refreshes, "
        f"toUnixTimestamp64Milli(max(at)) AS newest_at, count() AS n "
        f"FROM {storage.table('score_refreshes')} WHERE score_version = {{v:String}}", {"v": score_version})
    row = table.to_pylist()[0] if table.num_rows else None
    if not row or not row["n"]:
        return None
    return {"through": row["through"] / 1000.0, "blend_k": float(row["blend_k"]),
            "refreshes": int(row["refreshes"]), "at": row["newest_at"] / 1000.0}


def updates_after(storage: Storage, score_version: str, after: float, columns: str) -> pa.Table:
    """``columns`` of each pair's newest update to ``score_version`` scored after ``after``
    (seconds; what a worker has not applied yet), with ``scored_ms``."""
    return storage.query_arrow(
        f"SELECT {columns}, toUnixTimestamp64Milli(scored_at) AS scored_ms FROM ("
        f"SELECT * FROM {storage.table('pair_score_updates')} WHERE score_version = {{v:String}} "
        f"AND scored_at > fromUnixTimestamp64Milli({{after:Int64}}) "
        f"ORDER BY item_a, item_b, scored_at DESC LIMIT 1 BY item_a, item_b)",
        {"v": score_version, "after": int(round(after * 1000))})
