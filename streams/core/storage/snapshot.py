"""A copy of the tables a training run reads, as Parquet files, and their import.

Why: embedded ClickHouse (chDB) opens a data directory in one process only, so a training run
in a child process cannot read the worker's tables. The worker exports what the run needs
(items, labels, pair totals, the registry) into the run's directory; the child imports them
into its own chDB, trains, and exports the registry rows it wrote, which the worker imports
back. Against a ClickHouse server the trainer reads the tables directly and needs none of it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

QUERIES = {
    "items": "SELECT * FROM {t}",
    "pair_labels": "SELECT * FROM {t}",
    "pair_counts": "SELECT item_a, item_b, day, sum(count) AS count FROM {t} GROUP BY item_a, item_b, day",
    "models": "SELECT * FROM {t} FINAL",
    "pair_stats": "SELECT * FROM {t} WHERE stats_version = (SELECT max(stats_version) FROM {t})",
}


def export_tables(storage, out_dir: str | Path, tables=tuple(QUERIES)) -> dict[str, int]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in tables:
        data = storage.query_arrow(QUERIES[name].format(t=storage.table(name)))
        if data.num_rows:
            pq.write_table(data, out / f"{name}.parquet")
        sizes[name] = data.num_rows
    return sizes


def import_tables(storage, from_dir: str | Path, tables=tuple(QUERIES), where=None) -> dict[str, int]:
    """Insert the Parquet files found in ``from_dir``; ``where(name, table)`` may filter rows."""
    sizes = {}
    for name in tables:
        path = Path(from_dir) / f"{name}.parquet"
        if not path.exists():
            continue
        data = pq.read_table(path)
        if where is not None:
            data = where(name, data)
        storage.insert_arrow(name, data)
        sizes[name] = data.num_rows
    return sizes
