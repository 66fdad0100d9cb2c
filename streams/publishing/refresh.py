"""Continuous publishing: between trainings, the pairs whose behaviour changed are scored again
and written as updates of the live score version, so the re-ranker's table moves with the clicks.

Why not publish a new version: a publish scores every candidate pair (minutes, the cost of the
table); a refresh does the work of the pairs that changed (seconds, the cost of the change).
Behaviour changes by the second, the model by the hour: between two trainings the model score of
a published pair stays what it was, and only its behaviour evidence and the blend move.

Steps of ``refresh`` (each timed in the summary):

1. ``changes``: pairs at or above the low tier that click checkpoints touched since the version's
   watermark, and pairs labelled since (``stats.mark_changes``, inside ClickHouse);
2. ``evidence``: their count and lift now, users and swing from the last statistics refresh
   (``stats.changed_evidence``: those two need the whole user graph);
3. ``model``: a pair the version already holds keeps its model score and scorer (the
   cross-encoder's included); a new pair is scored by the two-tower head on the two items'
   embeddings (the version's own, or embedded now for an item it never saw);
4. ``manual``: a manual label wins, as in a publish;
5. ``blend``: with the k the version was published with (``score_refreshes``), so a refreshed
   row and an untouched one are on one scale;
6. ``write``: one insert into ``pair_score_updates`` (a reader sees all of one refresh or none of
   it, up to ``WRITE_ATOMIC_ROWS``; ``pair_scores_latest`` shows each pair's newest row), then a
   ``score_refreshes`` row moves the version's watermark to the time the changes were read.

``RefreshLoop`` (the leader worker's ``score-refresh`` loop) runs it, applies the rows to its own
lookup index, says ``refreshed`` on ``model-updates`` (every other worker applies the version's
new updates to its index: ``streams.serving.lookup.Serving.apply_updates``), then produces the
rows to ``pair-scores`` while the next refresh runs. A version whose watermark is older than
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

from models.text import item_text
from streams.core import metrics
from streams.core.config import Settings
from streams.core.records import pair_score_sql
from streams.core.storage import Storage, stats
from streams.core.storage import scores as score_tables
from streams.core.storage.items import products
from streams.core.storage.scores import SCORERS
from streams.publishing.publisher import DOMINANT, blend_sources

if TYPE_CHECKING:
    from streams.serving.index import ScoreIndex

log = logging.getLogger(__name__)

CHANGE_LOG_RETENTION_S = 3000.0  # pair_touched_hashes keeps an hour (TTL); a margin under it
# a refresh's rows go in one insert, which ClickHouse makes visible at once up to its
# max_insert_block_size (1,048,576 rows: one part); a larger refresh shows in blocks, each
# pair's row old or new, never torn
WRITE_ATOMIC_ROWS = 1_048_576


@dataclass
class Refreshed:
    """One refresh of one score version: the rows it wrote, and what it did."""

    score_version: str
    model_version: str
    rows: pa.Table | None  # as written to pair_score_updates (None: nothing changed)
    scored_at: float = 0.0  # the rows' scored_at (what ``emit`` reads them back by)
    summary: dict = field(default_factory=dict)


def refresh(storage: Storage, settings: Settings, students, index: ScoreIndex,
            embeddings: dict | None = None) -> Refreshed:
    """Steps 1-6 for the version ``index`` holds, scored by ``students`` (that version's model).
    ``embeddings`` (item -> vector of ``students``' two-tower) is a cache the caller may keep
    between refreshes. Raises ``LookupError`` when the version cannot be caught up from changes
    (no watermark, or one older than the change log): publish it in full instead.

    Every per-pair step is columnar (numpy, or SQL in ClickHouse): at 10k clicks/s on a few
    thousand items nearly every candidate changes between two refreshes, and a Python loop per
    pair made a refresh of 356k pairs take 38 s."""
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
    if not changed:
        score_tables.record_refresh(storage, version, "refresh", now, state["blend_k"], 0, 0,
                                    time.perf_counter() - started)
        return Refreshed(version, students.version, None, 0.0, {"pairs": 0, "new_pairs": 0, "through": now})
    t = time.perf_counter()
    evidence = stats.changed_evidence(storage, params, refresh_id)
    labels = _labels(storage, refresh_id)  # the same pairs in the same order
    if not (labels.column("item_a").equals(evidence.column("item_a"))
            and labels.column("item_b").equals(evidence.column("item_b"))):
        raise RuntimeError("refresh: the evidence and label reads of one change set disagree")
    steps["evidence"] = time.perf_counter() - t

    t = time.perf_counter()
    model_score, scorer, new = _model_scores(storage, students, index, evidence, embeddings)
    steps["model"] = time.perf_counter() - t
    t = time.perf_counter()
    is_manual = np.asarray(labels.column("source").to_numpy(zero_copy_only=False) == "manual", bool)
    model_score[is_manual] = labels.column("score").to_numpy()[is_manual]
    scorer[is_manual] = SCORERS.index("manual")
    keep = ~np.isnan(model_score)  # a pair with an item gone from the catalogue cannot be scored
    count = evidence.column("count").to_numpy().astype(np.uint64)
    lift = evidence.column("lift").to_numpy().astype(np.float32)
    score, behaviour, weight, dominant = blend_sources(np.nan_to_num(model_score, nan=1.0), lift, count,
                                                      state["blend_k"], is_manual)
    steps["blend"] = time.perf_counter() - t

    t = time.perf_counter()
    at = pa.array(np.flatnonzero(keep))
    m = len(at)
    scored_at = time.time()
    rows = pa.table({
        "item_a": evidence.column("item_a").take(at),
        "item_b": evidence.column("item_b").take(at),
        "score": pa.array(score, pa.float32()).take(at),
        "model_version": pa.array(np.full(m, students.version, object), pa.string()),
        "scorer": pa.array(np.array(SCORERS, dtype=object)[scorer], pa.string()).take(at),
        "score_version": pa.array(np.full(m, version, object), pa.string()),
        "scored_at": pa.array(np.full(m, int(round(scored_at * 1000)), np.int64)).cast(pa.timestamp("ms", "UTC")),
        "model_score": pa.array(np.nan_to_num(model_score, nan=1.0), pa.float32()).take(at),
        "behaviour_score": pa.array(behaviour, pa.float32()).take(at),
        "behaviour_weight": pa.array(weight, pa.float32()).take(at),
        "dominant": pa.array(np.array(DOMINANT, dtype=object)[dominant], pa.string()).take(at),
        "count": pa.array(count, pa.uint64()).take(at),
        "users": evidence.column("users").cast(pa.uint32()).take(at),
        "lift": pa.array(lift, pa.float32()).take(at),
        "swing": evidence.column("swing").cast(pa.float32()).take(at),
        "dim_scores": labels.column("dim_scores").take(at),
    })
    storage.insert_arrow("pair_score_updates", rows)  # one insert: see WRITE_ATOMIC_ROWS
    added = int(new[keep].sum())
    steps["write"] = time.perf_counter() - t
    score_tables.record_refresh(storage, version, "refresh", now, state["blend_k"], m, added,
                                time.perf_counter() - started)
    metrics.REFRESH_PAIRS.labels(kind="updated").inc(m - added)
    metrics.REFRESH_PAIRS.labels(kind="added").inc(added)
    summary = {"pairs": m, "new_pairs": added, "unscorable": int(len(keep) - m), "through": now,
               "lag_s": round(time.time() - state["through"], 3), "blend_k": state["blend_k"],
               "steps_s": {k: round(v, 3) for k, v in steps.items()}}
    return Refreshed(version, students.version, rows, scored_at, summary)


def _labels(storage: Storage, refresh_id: int) -> pa.Table:
    """item_a, item_b, source, score, dim_scores of the effective label of each changed pair
    (empty source and map where it has none), ordered like ``stats.changed_evidence``."""
    from streams.core.storage.labels import effective_sql

    t = storage.table
    changes = f"SELECT item_a, item_b FROM {t('pair_changes')} WHERE refresh = {{r:UInt64}}"
    return storage.query_arrow(
        f"""SELECT q.item_a AS item_a, q.item_b AS item_b, l.source AS source,
                   toFloat32(l.score) AS score, l.dim_scores AS dim_scores
            FROM ({changes}) AS q
            LEFT JOIN ({effective_sql(storage, f"(item_a, item_b) IN ({changes})")}) AS l
                ON l.item_a = q.item_a AND l.item_b = q.item_b
            ORDER BY item_a, item_b
            SETTINGS join_use_nulls = 0""", {"r": refresh_id})


def _model_scores(storage: Storage, students, index: ScoreIndex, pairs: pa.Table,
                  cache: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model score, scorer code, is new) per pair: the version's model score where it holds the
    pair (and a model scored it), the two-tower head's otherwise; NaN where an item is unknown
    to the catalogue."""
    a = pairs.column("item_a").to_pylist()
    b = pairs.column("item_b").to_pylist()
    n = len(a)
    score = np.full(n, np.nan, np.float32)
    scorer = np.zeros(n, np.int8)
    found, row = index.positions(a, b)
    same_model = index.model_version == students.version
    reuse = found.copy() if same_model else np.zeros(n, bool)
    if reuse.any():
        reuse[reuse] = index.scorer[row[reuse]] != SCORERS.index("manual")
        model_column = index.evidence.get("model_score")
        source = model_column if model_column is not None else index.score
        score[reuse] = np.asarray(source[row[reuse]], np.float32)
        scorer[reuse] = index.scorer[row[reuse]]
    todo = np.flatnonzero(~reuse)
    if len(todo):
        items = sorted({a[k] for k in todo.tolist()} | {b[k] for k in todo.tolist()})
        matrix, position = _embeddings(storage, students, index if same_model else None, items, cache)
        ia = np.fromiter((position.get(a[k], -1) for k in todo.tolist()), np.int64, len(todo))
        ib = np.fromiter((position.get(b[k], -1) for k in todo.tolist()), np.int64, len(todo))
        ok = (ia >= 0) & (ib >= 0)
        scorable, ia, ib = todo[ok], ia[ok], ib[ok]
        for i in range(0, len(scorable), 8192):
            part = slice(i, i + 8192)
            score[scorable[part]] = students.two_tower.score_embeddings(matrix[ia[part]], matrix[ib[part]])
        scorer[scorable] = SCORERS.index("two_tower")
    return score, scorer, ~found


def _embeddings(storage: Storage, students, index: ScoreIndex | None, items: list[str],
                cache: dict | None) -> tuple[np.ndarray, dict[str, int]]:
    """Two-tower embeddings of ``items`` as (matrix, item -> row): the version's (same model),
    the cache's, or embedded now (unknown to the catalogue: no row)."""
    cache = {} if cache is None else cache
    vectors: list[np.ndarray] = []
    position: dict[str, int] = {}
    missing = []
    for item in items:
        vector = index.embedding(item) if index is not None else None
        if vector is None:
            vector = cache.get((students.version, item))
        if vector is None:
            missing.append(item)
        else:
            position[item] = len(vectors)
            vectors.append(vector)
    if missing:
        rows = products(storage, missing)
        known = [i for i in missing if i in rows]
        for start in range(0, len(known), 256):
            chunk = known[start:start + 256]
            for item, vector in zip(chunk, students.two_tower.embed([item_text(rows[i]) for i in chunk])):
                cache[(students.version, item)] = vector
                position[item] = len(vectors)
                vectors.append(vector)
        while len(cache) > 200_000:  # insertion order: the oldest go first
            cache.pop(next(iter(cache)))
    return (np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)), position


def _records(storage: Storage, score_version: str, scored_at: float) -> list:
    """(key, value, None) of every row one refresh wrote: the ``pair-scores`` message, built by
    ClickHouse from the rows as stored (JSON in C++: a Python encoder per row was a third of a
    refresh), with the fields and rounding of ``streams.core.records.pair_score_value``."""
    table = storage.query_arrow(
        f"SELECT concat(item_a, '|', item_b) AS key, {pair_score_sql()} AS value "
        f"FROM {storage.table('pair_score_updates')} WHERE score_version = {{v:String}} "
        f"AND scored_at = fromUnixTimestamp64Milli({{at:Int64}}) "
        f"SETTINGS output_format_json_quote_64bit_integers = 0",
        {"v": score_version, "at": int(round(scored_at * 1000))})
    keys = table.column("key").cast(pa.binary()).to_pylist()
    values = table.column("value").cast(pa.binary()).to_pylist()
    return [(k, v, None) for k, v in zip(keys, values)]


async def emit(producer, settings: Settings, storage: Storage, refreshed: Refreshed) -> int:
    """The refreshed rows on ``pair-scores`` (compacted, key ``a|b``): the topic's reader sees
    the same newest row per pair as the table's. Refreshes must be emitted in their order."""
    from streams.core.produce import send_batched

    if refreshed.rows is None or not refreshed.rows.num_rows:
        return 0
    records = await asyncio.to_thread(_records, storage, refreshed.score_version, refreshed.scored_at)
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
        # the previous refresh's pair-scores output, produced while the next refresh runs (one
        # in flight: the topic gets refreshes in their order)
        self.emitting: asyncio.Task | None = None

    async def _emit(self, refreshed: Refreshed) -> None:
        started = time.perf_counter()
        try:
            sent = await emit(self.producer, self.settings, self.storage, refreshed)
        except Exception:  # noqa: BLE001 - the table and the lookup API have the rows already
            metrics.REFRESHES.labels(outcome="error").inc()
            log.exception("producing refresh %s to %s failed; its rows are in pair_scores_latest",
                          refreshed.score_version, self.settings.topic_pair_scores)
            return
        log.debug("produced %d refreshed pair scores to %s in %.2fs", sent, self.settings.topic_pair_scores,
                 time.perf_counter() - started)

    async def stop(self) -> None:
        """The worker is stopping: the output in flight is cancelled, not waited for (its rows are
        in the table and the lookup index already; a stop must stay prompt under load)."""
        if self.emitting is not None and not self.emitting.done():
            self.emitting.cancel()
            log.warning("stopping: the pair-scores output of refresh %s was cut short; "
                        "pair_scores_latest has its rows", self.last and self.last.get("through"))
            await asyncio.wait({self.emitting}, timeout=5)

    async def tick(self) -> dict | None:
        """One refresh, guarded: an error is logged and counted, never raised (the loop, and the
        worker, go on; the next tick tries again)."""
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
            if refreshed.rows is None:
                metrics.REFRESHES.labels(outcome="empty").inc()
                self.last = refreshed.summary
                return self.last
            # this worker's index first, so the next refresh, maybe right after, finds these
            # pairs in it (not new: no second two-tower pass); the announcement's apply here
            # then finds nothing left, the other workers' apply everything. The topic follows,
            # while the next refresh runs: formatting and producing ~900k messages took ~15 s
            # under load, which the next refresh, and so the lookup, waited for
            await self.serving.apply_updates(refreshed.score_version, refreshed.rows)
            await announce(self.producer, self.settings, "refreshed", refreshed.model_version,
                           refreshed.score_version)
            if self.emitting is not None:
                await self.emitting  # the previous refresh's output first: the topic keeps the order
            self.emitting = asyncio.ensure_future(self._emit(refreshed))
            seconds = time.perf_counter() - started
            refreshed.summary["seconds"] = round(seconds, 3)
            metrics.REFRESHES.labels(outcome="refreshed").inc()
            metrics.REFRESH_SECONDS.observe(seconds)
            log.info("refreshed %s: %d pairs (%d new) in %.2fs, %s", refreshed.score_version,
                     refreshed.summary["pairs"], refreshed.summary["new_pairs"], seconds,
                     refreshed.summary["steps_s"])
            self.last = refreshed.summary
            return self.last
