"""The worker's live snapshot as files that lookup processes map (``streams.serving.lookup_process``).

Why files: lookups must not share the worker's event loop and GIL (on a busy worker they waited
up to a second behind the ingest and a refresh's swap), and the embedded chDB opens its data in
one process only, so a lookup process cannot read ClickHouse itself. The worker already holds
the snapshot it serves; it writes each one it swaps in (a publish, a reload, a refresh's
updates) once, under ``<data_dir>/serving/<host>/exports/<name>``:

- ``pairs.arrow``: per pair, in key order, the key, score, scorer and evidence columns;
- ``partners.arrow``: the partner CSR (both directions, best first) and ``offsets.arrow``;
- ``items.arrow``, ``embedded.arrow`` and ``embeddings.npy``: the interned ids and embeddings;
- ``meta.json``: score and model version, how far refreshes got, the students' artifacts.

Then it moves the pointer ``current.json`` (written aside, then renamed: a reader sees the old
pointer or the new one, never half of one). A reader maps the files (Arrow IPC and ``.npy``,
no parse, no copy; one page-cache copy for every lookup process) and swaps one reference.
Older exports than the previous one are removed: on Linux a mapping outlives its file's name,
so a process still answering from one is safe. The pointer's mtime is the worker's heartbeat
(touched every ``HEARTBEAT_S``): a lookup process's ``/readyz`` says when the worker stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from streams.serving.index import ScoreIndex

log = logging.getLogger(__name__)

POINTER = "current.json"
HEARTBEAT_S = 2.0
KEEP = 2  # exports kept: the current one and the one before it


def export_root(data_dir: str | os.PathLike) -> Path:
    """Per host: replicas of a worker container may share one data volume (docker-compose.yaml's
    ``worker-data``), each with its own lookup processes; a worker and its children share a host."""
    return Path(data_dir) / "serving" / socket.gethostname()


def _write_arrow(path: Path, columns: dict) -> None:
    batch = pa.record_batch([column if isinstance(column, pa.Array) else pa.array(column)
                             for column in columns.values()], names=list(columns))
    with ipc.new_file(str(path), batch.schema) as writer:
        writer.write_batch(batch)


def _read_arrow(path: Path) -> dict:
    """Columns of a file written by ``_write_arrow``, mapped: numbers as numpy views, the rest Arrow."""
    table = ipc.open_file(pa.memory_map(str(path))).read_all()
    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()  # one batch per file: no copy
        numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
        out[name] = column.to_numpy(zero_copy_only=True) if numeric and not column.null_count else column
    return out


def write_export(root: Path, index: ScoreIndex, students: dict | None) -> Path:
    """Write ``index`` (and the students' ``{"version", "artifacts"}``) as a new export and
    point ``current.json`` at it; returns its directory."""
    name = f"{time.time_ns():020d}"
    directory = root / "exports" / name
    directory.mkdir(parents=True)
    parts = index.parts()
    evidence = {f"evidence.{k}": v for k, v in parts["evidence"].items()}
    _write_arrow(directory / "pairs.arrow", {"keys": parts["keys"], "score": parts["score"],
                                             "scorer": parts["scorer"], **evidence})
    _write_arrow(directory / "partners.arrow", {"partner": parts["partner"], "partner_score": parts["partner_score"],
                                                "partner_scorer": parts["partner_scorer"]})
    _write_arrow(directory / "offsets.arrow", {"offsets": np.asarray(parts["offsets"], np.int64)})
    _write_arrow(directory / "items.arrow", {"ids": pa.array(parts["ids"], pa.string())})
    _write_arrow(directory / "embedded.arrow", {"ids": pa.array(parts["embedded_ids"], pa.string())})
    if parts["embeddings"] is not None:
        np.save(directory / "embeddings.npy", np.ascontiguousarray(parts["embeddings"], np.float32))
    meta = {"score_version": parts["score_version"], "model_version": parts["model_version"],
            "updated_through": parts["updated_through"], "students": students, "written_at": time.time()}
    (directory / "meta.json").write_text(json.dumps(meta))
    pointer = root / POINTER
    aside = root / f".{POINTER}.{os.getpid()}"
    aside.write_text(json.dumps({"export": name}))
    os.replace(aside, pointer)
    for old in sorted((root / "exports").iterdir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def current_export(root: Path) -> tuple[str, float] | None:
    """(export name, pointer's mtime) of the newest export, None before the first."""
    try:
        pointer = root / POINTER
        mtime = pointer.stat().st_mtime
        return json.loads(pointer.read_text())["export"], mtime
    except (FileNotFoundError, ValueError, KeyError):
        return None


def read_export(root: Path, name: str) -> tuple[ScoreIndex, dict]:
    """The index of export ``name``, mapped, and its meta (see the module docstring)."""
    directory = root / "exports" / name
    meta = json.loads((directory / "meta.json").read_text())
    pairs = _read_arrow(directory / "pairs.arrow")
    partners = _read_arrow(directory / "partners.arrow")
    embeddings = None
    if (directory / "embeddings.npy").exists():
        embeddings = np.load(directory / "embeddings.npy", mmap_mode="r")
    parts = {"score_version": meta["score_version"], "model_version": meta["model_version"],
             "updated_through": meta["updated_through"],
             "ids": _read_arrow(directory / "items.arrow")["ids"].to_pylist(),
             "embedded_ids": _read_arrow(directory / "embedded.arrow")["ids"].to_pylist(),
             "keys": pairs.pop("keys"), "score": pairs.pop("score"), "scorer": pairs.pop("scorer"),
             "evidence": {k.removeprefix("evidence."): v for k, v in pairs.items()},
             "offsets": _read_arrow(directory / "offsets.arrow")["offsets"], "embeddings": embeddings,
             **partners}
    return ScoreIndex.from_parts(parts), meta


class ExportWriter:
    """The worker's side: writes each snapshot ``Serving`` swaps in, off the event loop; when
    snapshots come faster than the writes, only the newest is written. Between snapshots it
    touches the pointer every ``HEARTBEAT_S`` (the worker is alive and exporting)."""

    def __init__(self, root: Path):
        self.root = root
        self.written = 0
        self._pending = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def offer(self, snapshot) -> None:
        """A ``Serving`` listener: export ``snapshot`` (a ``streams.serving.lookup.Snapshot``)."""
        self._pending = snapshot
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="serving-export")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), HEARTBEAT_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            snapshot, self._pending = self._pending, None
            try:
                if snapshot is not None:
                    await asyncio.to_thread(self._write, snapshot)
                elif (self.root / POINTER).exists():
                    os.utime(self.root / POINTER)
            except OSError:  # a full disk: lookups keep the previous export; said, and retried
                log.exception("could not export the serving snapshot to %s", self.root)
                if self._pending is None:
                    self._pending = snapshot

    def _write(self, snapshot) -> None:
        students = snapshot.students
        meta = {"version": students.version, "artifacts": students.artifacts} if students is not None else None
        write_export(self.root, snapshot.index, meta)
        self.written += 1
