"""The records pairstream writes to its own topics, each built and parsed in one place.

Why one module: the ``pairs-to-score`` value was built in SQL by the ingest and parsed by hand
in the labeller, tier names were written out three times, the published evidence was shaped in
four places and "must be a JSON object" checked three times; a field added on one side could
silently miss the other. Every parser raises ``InvalidEvent`` with a reason (the dead-letter
header), like the click and item parsers of ``streams.core.events``.

| topic | key | value | built by | parsed by |
| --- | --- | --- | --- | --- |
| ``pairs-to-score`` | ``item_a|item_b`` | ``PairToScore`` | ``pair_to_score_sql`` (SQL) | ``PairToScore.parse`` |
| ``pair-scores`` | ``item_a|item_b`` | ``pair_score_value`` | the publisher | the re-ranker |
| ``item-partners`` | item id | ``item_partners_value`` | the publisher | the re-ranker |
| ``model-updates`` | ``students`` | ``model_update_value`` | promotion, rollback | ``parse_model_update`` |
| ``training-jobs`` | run id | ``training_job_value`` | the launcher | ``TrainingJob.parse`` |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import orjson

from streams.core.events import MAX_ID_CHARS, InvalidEvent

TIERS = ("low", "medium", "high")  # tier code k + 1 in pair_tiers; the tier_* settings' order


def tier_name(code: int) -> str:
    """``pair_tiers.tier`` (1..3) as its name; an unknown code as its number."""
    return TIERS[code - 1] if 1 <= code <= len(TIERS) else str(code)


def json_object(value: bytes | None, what: str) -> dict[str, Any]:
    """``value`` decoded as a JSON object; ``InvalidEvent`` (``tombstone``, ``bad_json``,
    ``not_object``) saying what ``what`` should have been."""
    if not value:
        raise InvalidEvent("tombstone", f"an empty value is no {what}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_json", f"{what}: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"a {what} must be a JSON object, got {type(obj).__name__}: "
                                         f"{value[:200]!r}")
    return obj


def _item_id(obj: dict, name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidEvent("bad_type", f"{name} must be a non-empty string of at most {MAX_ID_CHARS} characters")
    return value


# --- pairs-to-score -------------------------------------------------------------------------
@dataclass(frozen=True)
class PairToScore:
    """A pair that entered a frequency tier: what the labeller scores."""

    item_a: str
    item_b: str
    tier: str
    count: int = 0
    routed_at: float = 0.0

    @classmethod
    def parse(cls, raw: bytes | None) -> "PairToScore":
        obj = json_object(raw, "pairs-to-score record")
        a, b, tier = _item_id(obj, "item_a"), _item_id(obj, "item_b"), obj.get("tier")
        if tier not in TIERS:
            raise InvalidEvent("bad_type", f"tier must be one of {TIERS}")
        if not a < b:
            raise InvalidEvent("bad_type", "item_a must sort before item_b")
        count, routed_at = obj.get("count", 0), obj.get("routed_at", 0.0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidEvent("bad_type", "count must be a non-negative integer")
        if isinstance(routed_at, bool) or not isinstance(routed_at, (int, float)) or not math.isfinite(routed_at):
            raise InvalidEvent("bad_type", "routed_at must be a finite number")
        return cls(a, b, tier, count, float(routed_at))

    def to_json(self) -> bytes:
        return orjson.dumps({"item_a": self.item_a, "item_b": self.item_b, "tier": self.tier,
                             "count": self.count, "routed_at": self.routed_at})


def pair_to_score_sql(tier_code: str, count: str, routed_at: str) -> str:
    """The ClickHouse expression that formats a ``PairToScore`` value in the query that finds
    the crossings (JSON escaping in C++, not a Python loop), from the names of the columns (or
    parameters) holding the tier code, the count and the routing time."""
    names = ", ".join(f"'{t}'" for t in TIERS)
    return (f"formatRowNoNewline('JSONEachRow', item_a, item_b, arrayElement([{names}], {tier_code}) AS tier, "
            f"{count} AS count, {routed_at} AS routed_at)")


# --- pair-scores and item-partners (the publisher's Kafka output) ----------------------------------
EVIDENCE_FIELDS = ("dominant", "model_score", "behaviour_score", "behaviour_weight", "count", "users",
                   "lift", "swing", "dim_scores")
_ROUNDED = {"model_score": 4, "behaviour_score": 4, "behaviour_weight": 4, "lift": 4, "swing": 6}


def evidence_records(columns: Mapping[str, Sequence | np.ndarray]) -> list[dict]:
    """What a published score rests on, one dict per row, from ``EVIDENCE_FIELDS`` columns
    (``dim_scores``: a mapping or (name, score) pairs per row). Rounded column-wise: a
    per-value ``round()`` was most of a 1000-pair lookup answer's time."""
    if not columns:
        return []
    rounded = {name: np.round(np.asarray(columns[name], np.float64), digits).tolist()
               for name, digits in _ROUNDED.items()}
    dominant = [str(d) or None for d in columns["dominant"]]
    count = np.asarray(columns["count"]).tolist()
    users = np.asarray(columns["users"]).tolist()
    dims = [dict(d) if d is not None else {} for d in columns["dim_scores"]]
    return [{"dominant": dominant[j], "model_score": rounded["model_score"][j],
             "behaviour_score": rounded["behaviour_score"][j],
             "behaviour_weight": rounded["behaviour_weight"][j],
             "count": int(count[j]), "users": int(users[j]), "lift": rounded["lift"][j],
             "swing": rounded["swing"][j],
             "dim_scores": {k: round(float(v), 3) for k, v in dims[j].items()}}
            for j in range(len(dominant))]


def publish_summary_line(summary: dict) -> str:
    """A publish's decisions in one line: pairs, the blend's k, the cross-encoder's share, what
    each label source was worth, seconds."""
    blend, cross = summary.get("blend", {}), summary.get("cross_mix", {})
    worth = ", ".join(f"{source} {value}" for source, value in sorted(summary.get("label_worth", {}).items()))
    return (f"published {summary.get('score_version')} (model {summary.get('model_version')}): "
            f"{summary.get('pairs')} pairs over {summary.get('items')} items; blend k {blend.get('k')} "
            f"({blend.get('source', 'configured')}, {blend.get('pairs', 0)} held-out pairs); cross-encoder "
            f"share {cross.get('weight')} of {summary.get('cross_rescored')} rescored pairs ({cross.get('source')}, "
            f"{cross.get('pairs')} held-out); two-tower the rest; label worth {worth or 'none measured'}; "
            f"{summary.get('seconds')} s")


def computed_evidence(model_score: float) -> dict:
    """The evidence of a score computed on request: the model alone, no behaviour."""
    return {"dominant": "model", "model_score": round(model_score, 4)}


def pair_score_sql() -> str:
    """The ClickHouse expression that formats a ``pair_score_value`` from the columns of a
    ``pair_scores`` / ``pair_score_updates`` row (run with
    ``output_format_json_quote_64bit_integers = 0``): the same fields and rounding."""
    evidence = ("CAST((dominant, round(toFloat64(model_score), 4), round(toFloat64(behaviour_score), 4), "
                "round(toFloat64(behaviour_weight), 4), count, users, round(toFloat64(lift), 4), "
                "round(toFloat64(swing), 6), mapApply((k, v) -> (k, round(toFloat64(v), 3)), dim_scores)), "
                "'Tuple(dominant String, model_score Float64, behaviour_score Float64, behaviour_weight Float64, "
                "count UInt64, users UInt32, lift Float64, swing Float64, dim_scores Map(String, Float64))')")
    return ("formatRowNoNewline('JSONEachRow', item_a, item_b, round(toFloat64(score), 4) AS score, scorer, "
            f"model_version, score_version, {evidence} AS evidence)")


def pair_score_value(item_a: str, item_b: str, score: float, scorer: str, model_version: str,
                     score_version: str, evidence: dict) -> bytes:
    return orjson.dumps({"item_a": item_a, "item_b": item_b, "score": round(score, 4), "scorer": scorer,
                         "model_version": model_version, "score_version": score_version,
                         "evidence": evidence})


def item_partners_value(item_id: str, partners: list[tuple[str, float, str]], model_version: str,
                        score_version: str) -> bytes:
    return orjson.dumps({"item_id": item_id, "model_version": model_version, "score_version": score_version,
                         "partners": [{"item_id": p, "score": round(s, 4), "scorer": sc}
                                      for p, s, sc in partners]})


# --- model-updates ------------------------------------------------------------------------------
MODEL_UPDATE_KEY = b"students"


def model_update_value(event: str, model_version: str, score_version: str | None, at: float) -> bytes:
    """``event``: ``promoted`` or ``rollback`` (every worker reloads ``score_version``), or
    ``refreshed`` (every worker applies the version's new updates)."""
    return orjson.dumps({"event": event, "model_version": model_version, "score_version": score_version,
                         "at": at})


MODEL_EVENTS = ("promoted", "rollback", "refreshed")  # refreshed: new updates of the version (no new model)


def model_update_event(value: bytes | None) -> str:
    """What a (valid) ``model-updates`` message announces; ``promoted`` where it does not say."""
    event = json_object(value, "model update").get("event")
    return event if event in MODEL_EVENTS else "promoted"


def parse_model_update(value: bytes | None, is_version) -> str | None:
    """The score version a ``model-updates`` message names (None: "whatever is live"), checked
    for shape with ``is_version``; ``InvalidEvent`` (``bad_version`` and the JSON reasons)."""
    event = json_object(value, "model update")
    score_version = event.get("score_version")
    if score_version is None:
        return None
    if not isinstance(score_version, str) or not is_version(score_version):
        raise InvalidEvent("bad_version", f"malformed score version {str(score_version)[:200]!r}")
    return score_version


# --- training-jobs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingJob:
    """A run the workers' trigger queued for the trainer service."""

    run_id: str
    args: str = ""
    trigger: str = "kafka"
    at: float = 0.0

    @classmethod
    def parse(cls, value: bytes | None) -> "TrainingJob":
        job = json_object(value, 'training job {"run_id": "...", "args": "..."}')
        run_id, args = job.get("run_id"), job.get("args", "")
        if not isinstance(run_id, str) or not run_id:
            raise InvalidEvent("bad_type", "run_id must be a non-empty string")
        if not isinstance(args, str):
            raise InvalidEvent("bad_type", "args must be a string of distill options")
        at = job.get("at", 0.0)
        return cls(run_id, args, str(job.get("trigger", "kafka")),
                   float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else 0.0)

    def to_json(self) -> bytes:
        return orjson.dumps({"run_id": self.run_id, "trigger": self.trigger, "at": self.at, "args": self.args})
