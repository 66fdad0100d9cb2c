"""``pair_labels`` reads and writes, shared by the labeller, the CLI and training.

One row per (pair, source), newest wins (ReplacingMergeTree on ``labelled_at``), so writes
are idempotent. The *effective* label of a pair: the manual one if any, otherwise the newest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from streams.core.storage.base import Storage, timestamp_array

# default: the old blanket 10 of high-tier pairs (older rows); behaviour: a label from the
# pair's lift (``models.blend.behaviour_score``), given to high-tier pairs instead
SOURCES = ("default", "behaviour", "llm", "heuristic", "manual")


@dataclass
class LabelRow:
    item_a: str
    item_b: str
    score: float
    tier: str
    source: str
    backend: str
    model_name: str
    prompt_version: str
    dim_scores: dict[str, float] = field(default_factory=dict)
    dim_reasons: dict[str, str] = field(default_factory=dict)
    dim_dists: dict[str, list[float]] = field(default_factory=dict)
    labelled_at: float = field(default_factory=time.time)


SCHEMA = pa.schema([
    ("item_a", pa.string()), ("item_b", pa.string()), ("score", pa.float32()),
    ("tier", pa.string()), ("source", pa.string()), ("backend", pa.string()),
    ("model_name", pa.string()), ("prompt_version", pa.string()),
    ("dim_scores", pa.map_(pa.string(), pa.float32())),
    ("dim_reasons", pa.map_(pa.string(), pa.string())),
    ("dim_dists", pa.map_(pa.string(), pa.list_(pa.float32()))),
])


def write_labels(storage: Storage, rows: list[LabelRow]) -> int:
    if not rows:
        return 0
    if bad := [r.source for r in rows if r.source not in SOURCES]:
        raise ValueError(f"unknown label source {bad[0]!r}; one of {SOURCES}")
    columns = {name: [getattr(r, name) for r in rows] for name in SCHEMA.names}
    for name in ("dim_scores", "dim_reasons", "dim_dists"):
        columns[name] = [list(m.items()) for m in columns[name]]
    table = pa.table({name: pa.array(columns[name], SCHEMA.field(name).type) for name in SCHEMA.names})
    table = table.append_column("labelled_at", timestamp_array([r.labelled_at for r in rows]))
    storage.insert_arrow("pair_labels", table)
    return len(rows)


LABEL_COLUMNS = ("score", "source", "tier", "backend", "model_name", "prompt_version",
                 "dim_scores", "dim_reasons", "dim_dists")


def effective_sql(storage: Storage, where: str = "1") -> str:
    """SELECT of the effective label per pair (manual first, then newest), filtered by ``where``.

    The inner query renames the columns (``r_*``) so the outer aliases can reuse the names."""
    renamed = ", ".join(f"{c} AS r_{c}" for c in LABEL_COLUMNS)
    rank = "(r_source = 'manual', r_labelled_at)"
    picked = ",\n               ".join(f"argMax(r_{c}, {rank}) AS {c}" for c in LABEL_COLUMNS)
    return f"""
        SELECT item_a, item_b,
               {picked},
               max(r_labelled_at) AS labelled_at
        FROM (SELECT item_a, item_b, {renamed}, labelled_at AS r_labelled_at
              FROM {storage.table('pair_labels')} FINAL WHERE {where})
        GROUP BY item_a, item_b"""


def existing_labels(storage: Storage, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], list[tuple]]:
    """(item_a, item_b) -> [(source, backend, prompt_version)] for the given pairs."""
    if not pairs:
        return {}
    found = storage.query_arrow(
        f"""SELECT item_a, item_b, source, backend, prompt_version
            FROM {storage.table('pair_labels')} FINAL
            WHERE (item_a, item_b) IN arrayZip({{a:Array(String)}}, {{b:Array(String)}})""",
        {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]})
    out: dict[tuple[str, str], list[tuple]] = {}
    for a, b, source, backend, version in zip(*(found.column(i).to_pylist() for i in range(5))) \
            if found.num_rows else ():
        out.setdefault((a, b), []).append((source, backend, version))
    return out


def effective_labels(storage: Storage, where: str = "1", params: dict | None = None) -> list[dict]:
    """The effective labels as dicts (maps as dicts), for the CLI, tests and training."""
    table = storage.query_arrow(effective_sql(storage, where), params)
    rows = table.to_pylist() if table.num_rows else []
    for row in rows:
        for name in ("dim_scores", "dim_reasons", "dim_dists"):
            row[name] = dict(row[name] or [])
    return rows
