"""Continuous publishing: between trainings, the pairs whose behaviour changed are scored again
and written as updates of the live score version, so the re-ranker's table moves with the clicks.

Why not publish a new version: a publish scores every candidate pair (minutes, the cost of the
table); a refresh does the work of the pairs that changed (seconds, the cost of the change).
Behaviour changes by the second, the model by the hour: between two trainings the model score of
a published pair stays what it was, and only its behaviour evidence and the blend move.

Steps of ``refresh`` (each timed in the summary):

1. ``changes``: pairs at or above the low tier that click checkpoints touched since the version's
   watermark, and pairs labelled since (``stats.mark_changes``, inside ClickHouse);
2. ``evidence``: their count, users and lift now, swing from the last statistics refresh
   (``stats.changed_evidence``);
3. ``model``: a pair the version already holds keeps its model score and scorer (the
   cross-encoder's included); a new pair is scored by the two-tower head on the two items'
   embeddings (the version's own, or embedded now for an item it never saw);
4. ``manual``: a manual label wins, as in a publish;
5. ``blend``: with the k the version was published with (``score_refreshes``), so a refreshed
   row and an untouched one are on one scale;
6. ``write``: one insert into ``pair_score_updates`` (a reader sees all of one refresh or none of
   it; ``pair_scores_latest`` shows each pair's newest row), then a ``score_refreshes`` row moves
   the version's watermark to the time the changes were read.

``RefreshLoop`` (the worker's leader timer) runs it, produces the rows to ``pair-scores`` and says
``refreshed`` on ``model-updates``: every worker applies the version's new updates to its lookup
index (``streams.serving.lookup.Serving.apply_updates``). A version whose watermark is older than
the change log keeps (``pair_touched_hashes``: an hour), after a rollback to an old version or a
long outage, cannot be caught up from changes: it is published again in full with its own model.

Left to the next full publish: ``item_partners`` (top partners per item) and the cross-encoder
rescoring of pairs that are new since the version was written.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from models.blend import blend
from models.text import item_text
from streams.core import metrics
from streams.core.config import Settings
from streams.core.records import evidence_records, pair_score_value
from streams.core.storage import Storage, stats
from streams.core.storage import scores as score_tables
from streams.core.storage.base import timestamp_array
from streams.core.storage.items import products
from streams.core.storage.scores import SCORERS
from streams.publishing.publisher import DOMINANT

if TYPE_CHECKING:
    from streams.serving.index import ScoreIndex

log = logging.getLogger(__name__)

CHANGE_LOG_RETENTION_S = 3000.0  # pair_touched_hashes keeps an hour (TTL); a margin under it
WRITE_CHUNK_ROWS = 500_000  # one insert per refresh up to this many rows (one insert = one view)


@dataclass
class Refreshed:
    """One refresh of one score version: the rows it wrote, and what it did."""

    score_version: str
    model_version: str
    rows: pa.Table  # as written to pair_score_updates
    summary: dict = field(default_factory=dict)


def refresh(storage: Storage, settings: Settings, students, index: ScoreIndex,
            embeddings: dict | None = None) -> Refreshed:
    """Steps 1-6 for the version ``index`` holds, scored by ``students`` (that version's model).
    ``embeddings`` (item -> vector of ``students``' two-tower) is a cache the caller may keep
    between refreshes. Raises ``LookupError`` when the version cannot be caught up from changes
    (no watermark, or one older than the change log): publish it in full instead."""
    started = time.perf_counter()
    version = index.score_version
    if version is None:
        raise LookupError("no published score version to refresh")
    state = score_tables.refresh_state(storage, version)
    now = score_tables.clock(storage)
    if state is None or now - state["through"] > CHANGE_LOG_RETENTION_S:
        raise LookupError(f"score version {version} cannot be caught up from changes "
                          f"(watermark {state and round(now - state['through'])} s old)")
    steps: dict[str, float] = {}
    t = time.perf_counter()
    refresh_id = secrets.randbits(63)
    params = stats.StatsParams.from_settings(settings)
    changed = stats.mark_changes(storage, params, refresh_id, state["through"])
    steps["changes"] = time.perf_counter() - t
    empty = pa.table({"item_a": pa.array([], pa.string()), "item_b": pa.array([], pa.string())})
    if not changed:
        score_tables.record_refresh(storage, version, "refresh", now, state["blend_k"], 0, 0,
                                    time.perf_counter() - started)
        return Refreshed(version, students.version, empty, {"pairs": 0, "new_pairs": 0, "through": now})
    t = time.perf_counter()
    evidence = stats.changed_evidence(storage, params, refresh_id)
    steps["evidence"] = time.perf_counter() - t
    pairs = list(zip(evidence.column("item_a").to_pylist(), evidence.column("item_b").to_pylist()))

    t = time.perf_counter()
    model_score, scorer, new = _model_scores(storage, students, index, pairs, embeddings)
    steps["model"] = time.perf_counter() - t
    keep = ~np.isnan(model_score)  # a pair with an item gone from the catalogue cannot be scored
    manual = _manual(storage, refresh_id)
    for k, pair in enumerate(pairs):
        if pair in manual:
            model_score[k], scorer[k], keep[k] = manual[pair], SCORERS.index("manual"), True
    t = time.perf_counter()
    count = evidence.column("count").to_numpy().astype(np.uint64)
    lift = evidence.column("lift").to_numpy().astype(np.float32)
    score, behaviour, weight = blend(np.nan_to_num(model_score, nan=1.0), lift, count, state["blend_k"])
    is_manual = scorer == SCORERS.index("manual")
    score[is_manual] = model_score[is_manual]
    weight[is_manual] = 0.0
    dominant = np.where(is_manual, DOMINANT.index("manual"),
                        np.where(weight >= 0.5, DOMINANT.index("behaviour"), DOMINANT.index("model")))
    dims = _dim_scores(storage, refresh_id)
    steps["blend"] = time.perf_counter() - t

    t = time.perf_counter()
    at = np.flatnonzero(keep)
    m = len(at)
    scored_at = time.time()
    rows = pa.table({
        "item_a": evidence.column("item_a").take(pa.array(at)),
        "item_b": evidence.column("item_b").take(pa.array(at)),
        "score": pa.array(score[at], pa.float32()),
        "model_version": pa.array([students.version] * m, pa.string()),
        "scorer": pa.array(np.array(SCORERS, dtype=object)[scorer[at]].tolist(), pa.string()),
        "score_version": pa.array([version] * m, pa.string()),
        "scored_at": timestamp_array([scored_at] * m),
        "model_score": pa.array(np.nan_to_num(model_score[at], nan=1.0), pa.float32()),
        "behaviour_score": pa.array(behaviour[at], pa.float32()),
        "behaviour_weight": pa.array(weight[at], pa.float32()),
        "dominant": pa.array(np.array(DOMINANT, dtype=object)[dominant[at]].tolist(), pa.string()),
        "count": pa.array(count[at], pa.uint64()),
        "users": pa.array(evidence.column("users").to_numpy()[at].astype(np.uint32), pa.uint32()),
        "lift": pa.array(lift[at], pa.float32()),
        "swing": pa.array(evidence.column("swing").to_numpy()[at].astype(np.float32), pa.float32()),
        "dim_scores": pa.array([list(dims.get(pairs[k], {}).items()) for k in at.tolist()],
                               pa.map_(pa.string(), pa.float32())),
    })
    for i in range(0, m, WRITE_CHUNK_ROWS):
        storage.insert_arrow("pair_score_updates", rows.slice(i, WRITE_CHUNK_ROWS))
    added = int(new[at].sum())
    score_tables.record_refresh(storage, version, "refresh", now, state["blend_k"], m, added,
                                time.perf_counter() - started)
    steps["write"] = time.perf_counter() - t
    metrics.REFRESH_PAIRS.labels(kind="updated").inc(m - added)
    metrics.REFRESH_PAIRS.labels(kind="added").inc(added)
    summary = {"pairs": m, "new_pairs": added, "unscorable": int(len(pairs) - m), "through": now,
               "lag_s": round(time.time() - state["through"], 3), "blend_k": state["blend_k"],
               "steps_s": {k: round(v, 3) for k, v in steps.items()}}
    return Refreshed(version, students.version, rows, summary)


def _model_scores(storage: Storage, students, index: ScoreIndex, pairs: list[tuple[str, str]],
                  cache: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model score, scorer code, is new) per pair: the version's model score where it holds the
    pair (and scored it with a model), the two-tower head's otherwise; NaN where an item is
    unknown to the catalogue."""
    n = len(pairs)
    score = np.full(n, np.nan, np.float32)
    scorer = np.zeros(n, np.int8)
    found = index.lookup_rows(pairs)
    model_column = index.evidence.get("model_score")
    same_model = index.model_version == students.version
    todo = []
    for k, (hit, published, name, row) in enumerate(found):
        if hit and same_model and name != "manual":
            score[k] = model_column[row] if model_column is not None else published
            scorer[k] = SCORERS.index(name)
        else:
            todo.append(k)
    new = np.zeros(n, bool)
    new[[k for k in todo if not found[k][0]]] = True
    if todo:
        items = sorted({x for k in todo for x in pairs[k]})
        vectors = _embeddings(storage, students, index if same_model else None, items, cache)
        scorable = [k for k in todo if pairs[k][0] in vectors and pairs[k][1] in vectors]
        if scorable:
            u = np.stack([vectors[pairs[k][0]] for k in scorable])
            v = np.stack([vectors[pairs[k][1]] for k in scorable])
            score[scorable] = students.two_tower.score_embeddings(u, v)
            scorer[scorable] = SCORERS.index("two_tower")
    return score, scorer, new


def _embeddings(storage: Storage, students, index: ScoreIndex | None, items: list[str],
                cache: dict | None) -> dict[str, np.ndarray]:
    """Two-tower embeddings of ``items``: the version's (same model), the cache's, or embedded now."""
    cache = {} if cache is None else cache
    out: dict[str, np.ndarray] = {}
    missing = []
    for item in items:
        vector = index.embedding(item) if index is not None else None
        if vector is None:
            vector = cache.get((students.version, item))
        if vector is None:
            missing.append(item)
        else:
            out[item] = vector
    if missing:
        rows = products(storage, missing)
        known = [i for i in missing if i in rows]
        for start in range(0, len(known), 256):
            chunk = known[start:start + 256]
            for item, vector in zip(chunk, students.two_tower.embed([item_text(rows[i]) for i in chunk])):
                out[item] = cache[(students.version, item)] = vector
        while len(cache) > 200_000:  # insertion order: the oldest go first
            cache.pop(next(iter(cache)))
    return out


def _manual(storage: Storage, refresh_id: int) -> dict[tuple[str, str], float]:
    from streams.core.storage.labels import effective_labels

    return {(r["item_a"], r["item_b"]): float(r["score"]) for r in effective_labels(
        storage, f"source = 'manual' AND (item_a, item_b) IN (SELECT item_a, item_b FROM "
                 f"{storage.table('pair_changes')} WHERE refresh = {{r:UInt64}})", {"r": refresh_id})}


def _dim_scores(storage: Storage, refresh_id: int) -> dict[tuple[str, str], dict]:
    from streams.core.storage.labels import effective_labels

    return {(r["item_a"], r["item_b"]): r["dim_scores"] for r in effective_labels(
        storage, f"(item_a, item_b) IN (SELECT item_a, item_b FROM {storage.table('pair_changes')} "
                 f"WHERE refresh = {{r:UInt64}})", {"r": refresh_id})}


async def emit(producer, settings: Settings, refreshed: Refreshed) -> int:
    """The refreshed rows on ``pair-scores`` (compacted, key ``a|b``): the topic's reader sees
    the same newest row per pair as the table's."""
    from streams.core.produce import send_batched

    rows = refreshed.rows
    if not rows.num_rows:
        return 0
    evidence = evidence_records({
        "dominant": rows.column("dominant").to_pylist(),
        **{name: rows.column(name).to_numpy() for name in (
            "model_score", "behaviour_score", "behaviour_weight", "count", "users", "lift", "swing")},
        "dim_scores": [dict(d) for d in rows.column("dim_scores").to_pylist()]})
    records = [(f"{a}|{b}".encode(), pair_score_value(a, b, s, sc, refreshed.model_version,
                                                     refreshed.score_version, ev), None)
               for a, b, s, sc, ev in zip(rows.column("item_a").to_pylist(), rows.column("item_b").to_pylist(),
                                          rows.column("score").to_pylist(), rows.column("scorer").to_pylist(),
                                          evidence)]
    return await send_batched(producer, settings.topic_pair_scores, records)


class RefreshLoop:
    """The leader worker's refresh timer (see the module docstring). ``serving`` is the worker's
    (its live index and students); ``lock`` is shared with the training launcher, so a refresh
    and a full publish never write at once."""

    def __init__(self, settings: Settings, storage: Storage, producer, serving, lock: asyncio.Lock):
        self.settings = settings
        self.storage = storage
        self.producer = producer
        self.serving = serving
        self.lock = lock
        self.embeddings: dict = {}  # (model version, item) -> two-tower embedding
        self.last: dict | None = None

    async def tick(self) -> dict | None:
        """One refresh, guarded: an error is logged and counted, never raised (Faust stops the
        worker on an exception from a timer; the next tick tries again)."""
        try:
            return await self.run_once()
        except Exception:  # noqa: BLE001 - logged with its traceback
            metrics.REFRESHES.labels(outcome="error").inc()
            log.exception("refreshing the published scores failed; the next tick in %.0fs tries again",
                          self.settings.publish_refresh_s)
            return None

    async def run_once(self) -> dict | None:
        from streams.publishing.promotion import announce, publish_and_announce

        if self.lock.locked():  # a full publish is writing: it reads every change itself
            return None
        async with self.lock:
            live = await asyncio.to_thread(score_tables.live, self.storage)
            snap = self.serving.current
            if live is None or snap.students is None or snap.index.score_version != live["score_version"]:
                metrics.REFRESHES.labels(outcome="waiting").inc()
                return None
            started = time.perf_counter()
            try:
                refreshed = await asyncio.to_thread(refresh, self.storage, self.settings, snap.students,
                                                    snap.index, self.embeddings)
            except LookupError as why:
                log.warning("%s: publishing model %s again in full", why, live["model_version"])
                summary = await publish_and_announce(self.storage, self.settings, self.producer,
                                                     live["model_version"])
                metrics.REFRESHES.labels(outcome="full").inc()
                self.last = {"full": summary}
                return self.last
            if not refreshed.rows.num_rows:
                metrics.REFRESHES.labels(outcome="empty").inc()
                self.last = refreshed.summary
                return self.last
            refreshed.summary["kafka"] = await emit(self.producer, self.settings, refreshed)
            await announce(self.producer, self.settings, "refreshed", refreshed.model_version,
                           refreshed.score_version)
            seconds = time.perf_counter() - started
            refreshed.summary["seconds"] = round(seconds, 3)
            metrics.REFRESHES.labels(outcome="refreshed").inc()
            metrics.REFRESH_SECONDS.observe(seconds)
            log.info("refreshed %s: %d pairs (%d new) in %.2fs, %s", refreshed.score_version,
                     refreshed.summary["pairs"], refreshed.summary["new_pairs"], seconds,
                     refreshed.summary["steps_s"])
            self.last = refreshed.summary
            return self.last
