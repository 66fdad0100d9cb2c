"""Publish scores for the re-ranker: the promoted students score every candidate pair.

Steps (each named, each timed in the summary):

1. ``candidates``: every pair at or above the low tier within the horizon, plus every
   labelled pair (newly labelled ones included);
2. ``embed``: the two-tower item encoder embeds each distinct item once;
3. ``two_tower``: the pair head scores every candidate from the two embeddings (cheap);
4. ``manual``: a manual label wins over any model score (``scorer = manual``), as everywhere;
5. ``cross_rescore``: the cross-encoder rescores the top ``publish_cross_top_k`` two-tower
   partners of each item, best-ranked first, until ``publish_cross_budget_s`` is spent. Its
   scores are put on the two-tower's scale by quantile mapping over the rescored pairs (the
   cross-encoder's order among them, the two-tower's score distribution): two students are
   calibrated differently, and a raw cross score next to two-tower scores of other pairs
   would move the rescored pairs up or down the global ranking for no reason. How much of
   that score is published (``cross_mix``: 0..1, mixed with the two-tower's) is measured on
   each publish against behaviour on held-out rescored pairs, because which
   student ranks better depends on the round (``streams.publishing.cross_mix``);
6. ``write``: rows, top partners and embeddings of the new score version, then the version is
   marked complete and the live pointer moves to it (``streams.core.storage.scores``), and versions
   beyond ``score_versions_kept`` are dropped;
7. ``emit`` (async, separate): the compacted topics ``pair-scores`` and ``item-partners``.

Faust-free: the worker runs it after a promotion, and so do ``pairstream publish`` and the
trainer service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from models.text import item_text
from streams.core import metrics
from streams.core.config import Settings
from streams.core.records import (
    EVIDENCE_FIELDS,
    evidence_records,
    item_partners_value,
    pair_score_value,
    publish_summary_line,
)
from streams.core.storage import Storage
from streams.core.storage import scores as score_tables
from streams.core.storage.base import timestamp_array
from streams.core.storage.items import products
from streams.core.storage.label_worth import label_worth
from streams.core.storage.scores import SCORERS
from streams.publishing.cross_mix import CrossMix, fit_cross_weight, mix

log = logging.getLogger(__name__)

DOMINANT = ("model", "behaviour", "manual")  # which source decided a published score
WRITE_CHUNK_ROWS = 500_000  # rows per pair_scores insert


@dataclass
class Published:
    """One published score version, kept in memory for the Kafka output and the summary."""

    score_version: str
    model_version: str
    ids: list[str]  # item index -> item_id
    a: np.ndarray  # item index of item_a per pair
    b: np.ndarray
    score: np.ndarray
    scorer: np.ndarray  # index into SCORERS
    embeddings: np.ndarray | None = None  # row k = item ids[k]
    partners: dict[str, list[tuple[str, float, str]]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    evidence: dict[str, np.ndarray] = field(default_factory=dict)  # per pair: see ``blend_evidence``
    dim_scores: list[dict] = field(default_factory=list)  # per pair: the label's dimension scores


def candidate_pairs(storage: Storage, settings: Settings) -> pa.Table:
    """item_a, item_b of every pair >= the low tier in the horizon (``stats.horizon``: not
    ended by a click stamped decades ahead), plus the labelled pairs."""
    from streams.core.storage.stats import horizon

    counts = storage.table("pair_counts")
    span = horizon(storage, settings.horizon_days, "pair_counts")
    lo, hi = (span[0].isoformat(), span[1].isoformat()) if span else ("1970-01-01", "1970-01-01")
    return storage.query_arrow(
        f"""SELECT item_a, item_b FROM (
                SELECT item_a, item_b, sum(count) AS n FROM {counts}
                WHERE day >= {{lo:Date}} AND day <= {{hi:Date}}
                GROUP BY item_a, item_b HAVING n >= {{low:UInt64}}
                UNION DISTINCT
                SELECT DISTINCT item_a, item_b, toUInt64(0) AS n FROM {storage.table('pair_labels')}
            ) GROUP BY item_a, item_b ORDER BY item_a, item_b""",
        {"lo": lo, "hi": hi, "low": settings.tier_low})


def manual_labels(storage: Storage) -> dict[tuple[str, str], float]:
    """The newest manual label of each pair (``effective_labels`` decides what counts)."""
    from streams.core.storage.labels import effective_labels

    return {(r["item_a"], r["item_b"]): float(r["score"])
            for r in effective_labels(storage, "source = 'manual'")}


def _ranked(anchor: np.ndarray, score: np.ndarray):
    """Order (anchor, partner) rows by anchor, best score first; return order and rank."""
    order = np.lexsort((-score, anchor))
    sorted_anchor = anchor[order]
    starts = np.flatnonzero(np.r_[True, sorted_anchor[1:] != sorted_anchor[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order, np.arange(len(order)) - group_start


def _both_ways(a: np.ndarray, b: np.ndarray):
    return np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([np.arange(len(a))] * 2)


def score_candidates(storage: Storage, settings: Settings, students, progress: bool = True) -> Published:
    """Steps 1-5: the scores of one publish, not yet written."""
    steps: dict[str, float] = {}
    t = time.perf_counter()
    through = score_tables.clock(storage)  # behaviour up to here is in this version (refreshes go on from it)
    cand = candidate_pairs(storage, settings)
    all_ids = sorted(set(cand.column("item_a").to_pylist()) | set(cand.column("item_b").to_pylist()))
    rows = products(storage, all_ids)  # items no longer in the catalogue cannot be scored
    ids = [i for i in all_ids if i in rows]
    index = {item: k for k, item in enumerate(ids)}
    pairs = [(index[x], index[y]) for x, y in zip(cand.column("item_a").to_pylist(),
                                                   cand.column("item_b").to_pylist())
             if x in index and y in index]
    a = np.array([p[0] for p in pairs], np.int64)
    b = np.array([p[1] for p in pairs], np.int64)
    steps["candidates"] = time.perf_counter() - t

    t = time.perf_counter()
    texts = [item_text(rows[i]) for i in ids]
    chunks = [texts[i:i + 256] for i in range(0, len(texts), 256)]
    embeddings = np.concatenate(
        [students.two_tower.embed(chunk) for chunk in tqdm(chunks, desc="embed items", unit="batch",
                                                           disable=not progress)]
    ) if texts else np.zeros((0, 1), np.float32)
    steps["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    score = np.zeros(len(a), np.float32)
    for i in range(0, len(a), 8192):
        score[i:i + 8192] = students.two_tower.score_embeddings(embeddings[a[i:i + 8192]],
                                                               embeddings[b[i:i + 8192]])
    scorer = np.zeros(len(a), np.int8)
    steps["two_tower"] = time.perf_counter() - t

    manual = manual_labels(storage)  # a person's label wins: no model time spent on it
    for k, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        value = manual.get((ids[x], ids[y])) if manual else None
        if value is not None:
            score[k], scorer[k] = value, SCORERS.index("manual")

    t = time.perf_counter()
    rescored, cross, exhausted = _cross_rescore(settings, students, texts, a, b, score, scorer, progress)
    steps["cross_rescore"] = time.perf_counter() - t
    t = time.perf_counter()
    columns = pair_evidence(storage, settings, ids, a, b)
    mixed = mix_cross_scores(settings, ids, a, b, score, scorer, rescored, cross, columns["count"], columns["lift"])
    evidence, dims, fitted = blend_evidence(storage, settings, ids, a, b, score, scorer, columns)
    steps["blend"] = time.perf_counter() - t
    published = Published("", students.version, ids, a, b, evidence["score"], scorer, embeddings,
                          evidence=evidence, dim_scores=dims)
    published.summary = {
        "model_version": students.version, "pairs": int(len(a)), "items": len(ids),
        "cross_rescored": int(len(rescored)), "cross_budget_exhausted": exhausted,
        # the cross-encoder's share of the rescored pairs' score, measured against behaviour
        # on the held-out ones it has a verdict on (streams.publishing.cross_mix)
        "cross_mix": {"weight": mixed.weight, "source": mixed.source, "pairs": mixed.pairs,
                      "auc": {str(w): v for w, v in mixed.auc.items()}},
        "manual": int((scorer == SCORERS.index("manual")).sum()),
        "behaviour_dominant": int((evidence["dominant"] == DOMINANT.index("behaviour")).sum()),
        "blend": fitted,
        # what each label source was worth against behaviour on well-evidenced pairs: a source
        # at chance shows 0 here, the default heuristic included (streams.core.storage.label_worth)
        "label_worth": {source: e["worth"] for source, e in
                        label_worth(storage, settings.tier_medium)["sources"].items()},
        "provider": students.provider, "steps_s": {k: round(v, 3) for k, v in steps.items()},
        "behaviour_through": through,
    }
    return published


def pair_evidence(storage: Storage, settings: Settings, ids, a, b) -> dict[str, np.ndarray]:
    """Each pair's behaviour from a fresh ``pair_stats`` version: count, users, lift, swing
    (0 co-clicks and lift 1 for a pair it does not hold, a labelled pair nobody co-clicked)."""
    from streams.core.storage import stats

    stats.refresh(storage, stats.StatsParams.from_settings(settings))
    table = stats.latest(storage)
    position = {(x, y): k for k, (x, y) in enumerate(zip(table.column("item_a").to_pylist(),
                                                        table.column("item_b").to_pylist()))}
    rows = np.array([position.get((ids[x], ids[y]), -1) for x, y in zip(a.tolist(), b.tolist())],
                    np.int64)
    found = rows >= 0

    def column(name, dtype, default):
        out = np.full(len(a), default, dtype)
        out[found] = table.column(name).to_numpy()[rows[found]].astype(dtype)
        return out

    return {"count": column("count", np.uint64, 0), "users": column("users", np.uint32, 0),
            "lift": column("lift", np.float32, 1.0), "swing": column("swing", np.float32, 0.0)}


def mix_cross_scores(settings: Settings, ids, a, b, score, scorer, rescored, cross, count, lift) -> CrossMix:
    """Step 5a: the rescored pairs' score becomes the mix of both students that best agrees
    with behaviour on the held-out ones among them that behaviour has a verdict on (at least
    ``tier_low`` co-clicks; ``cross_mix``); ``score`` and ``scorer`` change in place. A share
    of 0 leaves them the two-tower's."""
    from training import held_out

    measured = np.array([count[k] >= settings.tier_low and held_out(ids[a[k]], ids[b[k]])
                         for k in rescored.tolist()], bool)
    mixed = fit_cross_weight(score[rescored][measured], cross[measured], lift[rescored][measured])
    log.debug("cross-encoder share %s (%s, on %d held-out pairs)", mixed.weight, mixed.source, mixed.pairs)
    if mixed.weight > 0:
        score[rescored] = mix(score[rescored], cross, mixed.weight)
        scorer[rescored] = SCORERS.index("cross_encoder")
    return mixed


def blend_evidence(storage: Storage, settings: Settings, ids, a, b, model_score, scorer, columns: dict):
    """Step 5b: the published score = the model's blended with behaviour (``models.blend``),
    with the evidence of each pair (``columns``: ``pair_evidence``) and the per-dimension
    scores of its label. Manual labels stay as they are. Returns (evidence, dimension scores,
    how k was chosen)."""
    from streams.core.storage.labels import effective_labels

    ev = dict(columns, model_score=np.asarray(model_score, np.float32).copy())
    manual = scorer == SCORERS.index("manual")
    fitted = fit_blend_weight(storage, settings, ids, a, b, ev["model_score"], manual)
    score, behaviour, weight, dominant = blend_sources(ev["model_score"], ev["lift"], ev["count"],
                                                      fitted["k"], manual)
    ev.update(score=score, behaviour_score=behaviour, behaviour_weight=weight, dominant=dominant)
    labels = {(r["item_a"], r["item_b"]): r["dim_scores"] for r in effective_labels(storage)}
    dims = [labels.get((ids[x], ids[y]), {}) for x, y in zip(a.tolist(), b.tolist())] if labels \
        else [{} for _ in range(len(a))]
    return ev, dims, fitted


def blend_sources(model_score, lift, count, k: float, manual: np.ndarray):
    """(published score, behaviour score, behaviour weight, dominant source code) per pair: the
    blend of ``models.blend`` where a model scored the pair; a manual label (``manual``, its
    score in ``model_score``) stands as it is. A publish and a refresh blend the same way."""
    from models.blend import blend

    score, behaviour, weight = blend(model_score, lift, count, k)
    score[manual] = np.asarray(model_score)[manual]
    weight[manual] = 0.0
    dominant = np.where(manual, DOMINANT.index("manual"),
                        np.where(weight >= 0.5, DOMINANT.index("behaviour"), DOMINANT.index("model")))
    return score, behaviour, weight, dominant.astype(np.int8)


def fit_blend_weight(storage: Storage, settings: Settings, ids, a, b, model_score, manual) -> dict:
    """The blend's k, fitted without ground truth (``models.blend.fit_evidence_count``) on the
    candidates the model never trained on (``training.held_out``), with behaviour split into
    even and odd days; the configured ``blend_evidence_count`` when that is not possible
    (too few such pairs, or every click on one day's parity)."""
    from models.blend import fit_evidence_count
    from streams.core.storage import stats
    from training import held_out

    configured = {"k": float(settings.blend_evidence_count), "source": "setting", "pairs": 0}
    if settings.blend_fit_min_pairs <= 0:
        return configured
    chosen = [k for k, (x, y) in enumerate(zip(a.tolist(), b.tolist()))
              if not manual[k] and held_out(ids[x], ids[y])]
    if len(chosen) < settings.blend_fit_min_pairs:
        return configured | {"pairs": len(chosen)}
    halves = stats.half_evidence(storage, [(ids[a[k]], ids[b[k]]) for k in chosen],
                                 stats.StatsParams.from_settings(settings))
    if halves is None:
        return configured | {"pairs": len(chosen)}
    fit = fit_evidence_count(np.asarray(model_score)[chosen], halves)
    log.debug("blend k fitted on %d held-out pairs: %s (configured %s)", fit.pairs, fit.k,
             settings.blend_evidence_count)
    return {"k": fit.k, "source": "fitted", "pairs": fit.pairs,
            "errors": {str(k): round(e, 4) for k, e in fit.errors.items()}}


def _cross_rescore(settings, students, texts, a, b, score, scorer, progress) -> tuple[np.ndarray, np.ndarray, bool]:
    """Rescore the best two-tower partners of every item with the cross-encoder, rank 1 of
    every item first, then rank 2, ..., until the time budget is spent. Returns the rescored
    pairs, their cross scores on the two-tower's scale (``quantile_map``) and whether the
    budget ran out; ``mix_cross_scores`` decides how much of them is published."""
    k = settings.publish_cross_top_k
    if k <= 0 or not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.float32), False
    anchor, _partner, pair = _both_ways(a, b)
    order, rank = _ranked(anchor, np.concatenate([score, score]))
    best_rank = np.full(len(a), np.iinfo(np.int64).max)
    np.minimum.at(best_rank, pair[order], rank)
    chosen = np.flatnonzero((best_rank < k) & (scorer != SCORERS.index("manual")))
    chosen = chosen[np.lexsort((-score[chosen], best_rank[chosen]))]
    deadline = time.monotonic() + settings.publish_cross_budget_s
    done, exhausted = 0, False
    cross = np.zeros(len(chosen), np.float32)
    with tqdm(total=len(chosen), desc="cross-encoder rescoring", unit="pair", disable=not progress) as bar:
        for i in range(0, len(chosen), 64):
            if time.monotonic() >= deadline:
                exhausted = True
                break
            part = chosen[i:i + 64]
            cross[i:i + len(part)] = students.cross.predict([(texts[x], texts[y]) for x, y in zip(a[part], b[part])])
            done += len(part)
            bar.update(len(part))
    rescored = chosen[:done]
    return rescored, quantile_map(cross[:done], score[rescored]), exhausted


def quantile_map(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values`` re-expressed on the scale of ``reference`` (same length): the k-th smallest
    value gets the k-th smallest reference score, ties in ``values`` share their mean. The
    order of ``values`` is kept, the distribution becomes the reference's."""
    if not len(values):
        return values.astype(np.float32)
    order = np.argsort(values, kind="stable")
    mapped = np.empty(len(values), np.float64)
    mapped[order] = np.sort(reference.astype(np.float64))
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    if len(counts) < len(values):  # equal inputs must not get different outputs
        mapped = (np.bincount(group, mapped) / counts)[group]
    return mapped.astype(np.float32)


def _evidence_columns(published: Published, part: slice) -> dict:
    ev = published.evidence
    if not ev:
        return {}
    return {
        "model_score": pa.array(ev["model_score"][part], pa.float32()),
        "behaviour_score": pa.array(ev["behaviour_score"][part], pa.float32()),
        "behaviour_weight": pa.array(ev["behaviour_weight"][part], pa.float32()),
        "dominant": pa.array(np.array(DOMINANT, dtype=object)[ev["dominant"][part]].tolist(), pa.string()),
        "count": pa.array(ev["count"][part], pa.uint64()),
        "users": pa.array(ev["users"][part], pa.uint32()),
        "lift": pa.array(ev["lift"][part], pa.float32()),
        "swing": pa.array(ev["swing"][part], pa.float32()),
        "dim_scores": pa.array([list(d.items()) for d in published.dim_scores[part]],
                               pa.map_(pa.string(), pa.float32())),
    }


def evidence_json(published: Published) -> list[dict]:
    """The evidence of every pair as the Kafka output and the lookup API show it."""
    ev = published.evidence
    if not ev:
        return [{} for _ in range(len(published.a))]
    columns = {name: ev[name] for name in EVIDENCE_FIELDS if name not in ("dominant", "dim_scores")}
    return evidence_records({**columns, "dominant": np.array(DOMINANT, dtype=object)[ev["dominant"]],
                             "dim_scores": published.dim_scores})


def top_partners(published: Published, k: int) -> dict[str, list[tuple[str, float, str]]]:
    anchor, partner, pair = _both_ways(published.a, published.b)
    s = np.concatenate([published.score, published.score])
    order, rank = _ranked(anchor, s)
    keep = order[rank < k]
    out: dict[str, list] = {}
    ids = published.ids
    for x, y, p in zip(anchor[keep].tolist(), partner[keep].tolist(), pair[keep].tolist()):
        out.setdefault(ids[x], []).append((ids[y], float(published.score[p]),
                                           SCORERS[published.scorer[p]]))
    return out


def write(storage: Storage, settings: Settings, published: Published) -> Published:
    """Step 6: write the version, mark it complete, move the live pointer, drop old versions."""
    t = time.perf_counter()
    version = published.score_version = score_tables.new_score_version(published.model_version)
    model = published.model_version
    score_tables.set_status(storage, version, model, "writing")
    ids = pa.array(published.ids, pa.string())
    n = len(published.a)
    now = time.time()
    for i in range(0, n, WRITE_CHUNK_ROWS):
        part = slice(i, i + WRITE_CHUNK_ROWS)
        m = len(published.a[part])
        storage.insert_arrow("pair_scores", pa.table({
            "item_a": ids.take(pa.array(published.a[part])),
            "item_b": ids.take(pa.array(published.b[part])),
            "score": pa.array(published.score[part], pa.float32()),
            "model_version": pa.array([model] * m, pa.string()),
            "scorer": pa.array(np.array(SCORERS, dtype=object)[published.scorer[part]].tolist(), pa.string()),
            "score_version": pa.array([version] * m, pa.string()),
            "scored_at": timestamp_array([now] * m),
            **_evidence_columns(published, part),
        }))
    published.partners = top_partners(published, settings.publish_partners_k)
    rows = [(item, r, p, s, sc) for item, partners in published.partners.items()
            for r, (p, s, sc) in enumerate(partners, 1)]
    if rows:
        cols = list(zip(*rows))
        storage.insert_arrow("item_partners", pa.table({
            "item_id": pa.array(cols[0], pa.string()), "rank": pa.array(cols[1], pa.uint16()),
            "partner_id": pa.array(cols[2], pa.string()), "score": pa.array(cols[3], pa.float32()),
            "scorer": pa.array(cols[4], pa.string()), "model_version": [model] * len(rows),
            "score_version": [version] * len(rows)}))
    emb = published.embeddings
    if emb is not None and len(emb):
        dim = emb.shape[1]
        values = pa.array(emb.astype(np.float32).ravel(), pa.float32())
        offsets = pa.array(np.arange(0, len(emb) * dim + 1, dim, dtype=np.int32))
        storage.insert_arrow("item_embeddings", pa.table({
            "item_id": ids, "embedding": pa.ListArray.from_arrays(offsets, values),
            "model_version": [model] * len(emb), "score_version": [version] * len(emb)}))
    score_tables.set_status(storage, version, model, "complete", n)
    # where refreshes of this version start, and the k they blend with (streams.publishing.refresh)
    summary = published.summary
    score_tables.record_refresh(storage, version, "publish", summary.get("behaviour_through", now),
                                summary.get("blend", {}).get("k", settings.blend_evidence_count), n)
    score_tables.point_live(storage, version, model)
    dropped = score_tables.drop_old(storage, settings.score_versions_kept)
    published.summary.update(score_version=version, dropped_versions=dropped)
    published.summary["steps_s"]["write"] = round(time.perf_counter() - t, 3)
    metrics.SCORES_PUBLISHED.inc(n)
    metrics.set_live(version, model)
    return published


def publish(storage: Storage, settings: Settings, students, progress: bool = True) -> Published:
    """Steps 1-6 (see the module docstring); ``emit`` does the Kafka output."""
    started = time.perf_counter()
    published = write(storage, settings, score_candidates(storage, settings, students, progress))
    summary = published.summary
    summary["seconds"] = round(time.perf_counter() - started, 3)
    metrics.PUBLISH_SECONDS.observe(summary["seconds"])
    # what this publish decided, kept with its version (`pairstream models show`, /status) and said once
    score_tables.set_status(storage, published.score_version, published.model_version, "complete",
                            summary["pairs"], detail=json.dumps(summary, default=str))
    log.info("%s", publish_summary_line(summary))
    return published



async def emit(producer, settings: Settings, published: Published) -> dict:
    """Step 7: ``pair-scores`` (key ``a|b``) and ``item-partners`` (key item_id), compacted."""

    from streams.core.produce import send_batched

    ids, model, version = published.ids, published.model_version, published.score_version

    def pair_records() -> list:
        return [(f"{ids[x]}|{ids[y]}".encode(),
                 pair_score_value(ids[x], ids[y], s, SCORERS[sc], model, version, evidence), None)
                for x, y, s, sc, evidence in zip(published.a.tolist(), published.b.tolist(),
                                                 published.score.tolist(), published.scorer.tolist(),
                                                 evidence_json(published))]

    # built off the event loop (a publish has every candidate pair): the lookup API and the
    # ingest share the loop
    pair_n = await send_batched(producer, settings.topic_pair_scores, await asyncio.to_thread(pair_records))
    records = await asyncio.to_thread(lambda: [
        (item.encode(), item_partners_value(item, partners, model, version), None)
        for item, partners in published.partners.items()])
    item_n = await send_batched(producer, settings.topic_item_partners, records)
    return {"pair_scores": pair_n, "item_partners": item_n}
