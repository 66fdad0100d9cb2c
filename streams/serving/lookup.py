"""What the lookup API answers from: the serving state, and the answers to pair requests.

Each answer says where its score came from: ``table`` (the live score version), ``computed``
(the two-tower student scored an unpublished pair), or ``null`` with ``unknown_item`` /
``no_model``. The routes are ``streams.serving.routes``. ``Serving`` holds the index and the
students as one immutable snapshot; a hot reload builds the next snapshot off the event loop
and swaps one reference, so a request in flight finishes on the snapshot it started with.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import orjson
import pyarrow as pa

from models.text import item_text
from streams.core import metrics
from streams.core.config import Settings
from streams.core.records import computed_evidence
from streams.core.storage import Storage
from streams.core.storage.items import products
from streams.serving.index import ScoreIndex

if TYPE_CHECKING:
    from models.runtime import Students

log = logging.getLogger(__name__)
FAIR_CHUNK = 16  # pairs answered between yields to the event loop (~0.1 ms of work; 64 gave a
                 # 1-pair p99 of 12 ms under the mixed load of `bench serve`, 16 gave 5-7 ms)


@dataclass(frozen=True)
class Snapshot:
    index: ScoreIndex
    students: Students | None

    @property
    def model_version(self) -> str | None:
        return getattr(self.students, "version", None) or self.index.model_version


class Serving:
    """The live index and students of one worker (see the module docstring)."""

    def __init__(self, storage: Storage | None, settings: Settings,
                 item_rows: Callable[[list[str]], dict[str, dict]] | None = None):
        """``item_rows(ids)``: catalogue rows of items to embed on request (default: read from
        ``storage``; a lookup process asks its worker: ``streams.serving.lookup_process``)."""
        self._storage = storage
        self.settings = settings
        self.item_rows = item_rows or (lambda ids: products(self.storage, ids))
        self.listeners: list[Callable[[Snapshot], None]] = []  # told of each snapshot swapped in
        self.current = Snapshot(ScoreIndex.empty(), None)
        self._computed: OrderedDict = OrderedDict()  # (model version, item) -> embedding
        self._reload_lock = asyncio.Lock()
        # large requests parse, score and serialise one at a time (``streams.serving.routes``)
        self.bulk_lane = asyncio.Lock()

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise RuntimeError("this Serving reads no ClickHouse: a lookup process swaps exports in")
        return self._storage

    # --- reload ----------------------------------------------------------------------------
    def build(self, score_version: str | None = None) -> Snapshot:
        """The next snapshot: the live (or given) score version and its model's students."""
        from models.runtime import Students
        from streams.core.storage import registry

        index = ScoreIndex.load(self.storage, score_version)
        version = index.model_version
        if version is None:
            row = registry.promoted(self.storage)
            version = row["version"] if row else None
        students = self.current.students
        if version is not None and getattr(students, "version", None) != version:
            row = registry.get(self.storage, version)
            students = Students(version, row["artifacts"], self.settings.onnx_threads) if row else None
        return Snapshot(index, students)

    async def reload(self, score_version: str | None = None) -> Snapshot:
        async with self._reload_lock:
            try:
                snapshot = await asyncio.to_thread(self.build, score_version)
            except Exception:
                metrics.MODEL_RELOADS.labels(outcome="failed").inc()
                raise
            return self.swap(snapshot)

    def swap(self, snapshot: Snapshot, outcome: str = "ok") -> Snapshot:
        """Serve ``snapshot`` from now on: one reference, so requests in flight keep the old one."""
        self.current = snapshot
        # the index, students and catalogue are long-lived: out of the cyclic GC's sight,
        # whose full collections over them paused the worker's loop for ~0.3 s (what stays
        # unreachable in a cycle among them is kept: snapshots hold no cycles)
        gc.freeze()
        metrics.MODEL_RELOADS.labels(outcome=outcome).inc()
        for listener in self.listeners:
            listener(snapshot)
        if outcome == "updates":
            return snapshot
        if snapshot.index.score_version:  # what this worker serves, also after a restart
            metrics.set_live(snapshot.index.score_version, snapshot.index.model_version or "")
        if snapshot.model_version:
            metrics.set_promoted(snapshot.model_version)
        log.info("serving score version %s, model %s (%d pairs, provider %s)",
                 snapshot.index.score_version, snapshot.model_version, len(snapshot.index),
                 getattr(snapshot.students, "provider", None))
        return snapshot

    async def apply_updates(self, score_version: str, rows=None) -> Snapshot:
        """Apply the updates continuous publishing wrote to ``score_version`` since this worker's
        last (``streams.publishing.refresh``): a copy of the index with them, swapped in like a
        reload. A worker on another version reloads ``score_version`` whole instead. ``rows``:
        the refresh's own rows (the leader has them in memory: no read back); else they are
        read from ``pair_score_updates``."""
        from streams.core.storage import scores as score_tables
        from streams.serving.index import UPDATE_COLUMNS

        if self.current.index.score_version != score_version:
            return await self.reload(score_version)
        async with self._reload_lock:
            snap = self.current
            if snap.index.score_version != score_version:  # a reload won the lock first
                return snap
            if rows is None:
                rows = await asyncio.to_thread(score_tables.updates_after, self.storage, score_version,
                                               snap.index.updated_through, UPDATE_COLUMNS)
            elif "scored_ms" not in rows.column_names:
                rows = rows.append_column("scored_ms", rows.column("scored_at").cast(pa.int64()))
            if rows.num_rows:
                index = await asyncio.to_thread(snap.index.merged, rows)
                snap = self.swap(Snapshot(index, snap.students), outcome="updates")
                log.debug("applied %d updated pair scores to %s (%d pairs now)", rows.num_rows,
                         score_version, len(index))
            return snap

    # --- scoring -----------------------------------------------------------------------------
    async def score_pairs(self, pairs: list[tuple[str, str]]) -> dict:
        """Scores for ``pairs`` from one snapshot (``answer_json`` is the same answer, serialised)."""
        snap = self.current
        chunks = dict([chunk async for chunk in self._answer_chunks(snap, pairs)])
        return {"model_version": snap.model_version, "score_version": snap.index.score_version,
                "results": [r for start in sorted(chunks) for r in chunks[start]]}

    async def answer_json(self, pairs: list[tuple[str, str]]) -> bytes:
        """``score_pairs`` as JSON bytes, each chunk serialised as soon as it is final: its
        dicts then die young (freed by reference counting, never seen by the cyclic GC)
        instead of living for the whole request to be scanned and promoted by the GC, whose
        pauses held every other request on the loop under large lookups."""
        snap = self.current
        parts = {start: orjson.dumps(results)[1:-1] async for start, results in self._answer_chunks(snap, pairs)}
        head = orjson.dumps({"model_version": snap.model_version, "score_version": snap.index.score_version})
        body = b",".join(parts[start] for start in sorted(parts) if parts[start])
        return b"".join((head[:-1], b',"results":[', body, b"]}"))

    async def _answer_chunks(self, snap: Snapshot, pairs: list[tuple[str, str]]):
        """(first index, answers) of each chunk of ``FAIR_CHUNK`` pairs, with a yield to the
        event loop between chunks (see ``streams.serving.routes`` for the bulk lane around it). A chunk
        the version answers wholly comes at once; the others wait for one batch that computes
        every unpublished pair of the request."""
        sources: Counter = Counter()
        pending = []  # (start, pairs, canonical, missing, results) of chunks with unpublished pairs
        for start in range(0, len(pairs), FAIR_CHUNK):
            if start:
                await asyncio.sleep(0)  # let waiting requests run between chunks
            chunk = pairs[start:start + FAIR_CHUNK]
            canonical = [(a, b) if a < b else (b, a) for a, b in chunk]
            results: list = []
            missing: list[int] = []
            self._table_chunk(snap, chunk, canonical, results, missing)
            if missing:
                pending.append((start, chunk, canonical, missing, results))
                continue
            sources.update(r["source"] for r in results)
            yield start, results
        if pending:  # the pending chunks side by side: one list each of pairs, keys, answers
            offsets = list(itertools.accumulate((len(chunk) for _, chunk, *_ in pending[:-1]), initial=0))
            all_pairs = [pair for _, chunk, *_ in pending for pair in chunk]
            all_canonical = [key for _, _, canonical, *_ in pending for key in canonical]
            all_results = [result for *_, results in pending for result in results]
            all_missing = [offset + k for offset, (*_, missing, _) in zip(offsets, pending) for k in missing]
            await self._compute(snap, all_pairs, all_canonical, all_missing, all_results)
            for offset, (start, chunk, *_) in zip(offsets, pending):
                results = all_results[offset:offset + len(chunk)]
                sources.update(r["source"] for r in results)
                yield start, results
        for source, n in sources.items():  # one update per source
            metrics.LOOKUP_PAIRS.labels(source=source).inc(n)

    @staticmethod
    def _table_chunk(snap: Snapshot, pairs, canonical, results: list, missing: list[int]) -> None:
        """Published answers of one chunk appended to ``results``; the rest marked missing."""
        found = snap.index.lookup_rows(canonical)
        hits = [row for hit, _, _, row in found if hit]
        evidence = iter(snap.index.evidence_rows(hits))
        version = snap.index.model_version
        for k, ((a, b), (hit, score, scorer, _row)) in enumerate(zip(pairs, found)):
            if not hit:
                missing.append(k)
                results.append(None)
            else:
                results.append({"item_a": a, "item_b": b, "score": round(score, 4),
                                "model_version": version, "source": "table",
                                "scorer": scorer, "evidence": next(evidence)})

    async def _compute(self, snap: Snapshot, pairs, canonical, missing, results) -> None:
        """Two-tower scores for pairs the version does not hold (pair head on embeddings)."""
        students = snap.students
        if students is None:
            for k in missing:
                results[k] = {"item_a": pairs[k][0], "item_b": pairs[k][1], "score": None,
                              "model_version": None, "source": "no_model", "scorer": None}
            return
        items = sorted({x for k in missing for x in canonical[k]})
        vectors = await self._embeddings(snap, items)
        todo = [k for k in missing if all(x in vectors for x in canonical[k])]
        scores = []
        if todo:
            u = np.stack([vectors[canonical[k][0]] for k in todo])
            v = np.stack([vectors[canonical[k][1]] for k in todo])
            scores = students.two_tower.score_embeddings(u, v).tolist()
        by_k = dict(zip(todo, scores))
        for k in missing:
            a, b = pairs[k]
            if k in by_k:
                results[k] = {"item_a": a, "item_b": b, "score": round(by_k[k], 4),
                              "model_version": students.version, "source": "computed",
                              "scorer": "two_tower",  # no behaviour evidence: the model alone
                              "evidence": computed_evidence(by_k[k])}
            else:
                results[k] = {"item_a": a, "item_b": b, "score": None, "model_version": None,
                              "source": "unknown_item", "scorer": None}

    async def _embeddings(self, snap: Snapshot, items: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        unknown: list[str] = []
        students = snap.students
        if students is None:
            return out
        version = students.version
        for item in items:
            vector = snap.index.embedding(item) if snap.index.model_version == version else None
            if vector is None:
                vector = self._computed.get((version, item))
            if vector is None:
                unknown.append(item)
            else:
                out[item] = vector
        if unknown:
            rows = await asyncio.to_thread(self.item_rows, unknown)
            known = [i for i in unknown if i in rows]
            if known:
                encoded = await asyncio.to_thread(students.two_tower.embed,
                                                  [item_text(rows[i]) for i in known])
                for item, vector in zip(known, encoded):
                    out[item] = vector
                    self._computed[(version, item)] = vector
                while len(self._computed) > 50_000:
                    self._computed.popitem(last=False)
        return out
