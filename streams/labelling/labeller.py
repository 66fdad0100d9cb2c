"""Label the pairs routed to ``pairs-to-score``: default, cached, LLM or few-shot LLM.

Per routed pair (idempotent, so at-least-once delivery is fine):
- a manual label exists: nothing to do (a manual label always wins);
- tier ``high`` with a smoothed lift >= ``behaviour_default_min_lift``: a label from
  behaviour (``models.blend.behaviour_score`` of its lift, source ``behaviour``), no LLM
  call. A high count alone proves nothing: two bestsellers clicked by everybody reach it
  whether or not they go together, so a high-tier pair whose lift is below the bar is
  scored like a medium one (the LLM) instead of getting the old blanket 10;
- already labelled with this prompt version and backend: nothing to do (the cache);
- tier ``medium``: the five-dimension LLM score;
- tier ``low`` (long tail): the same, with ``few_shot_k`` labelled pairs of the same category
  pair shown as examples (manual first, then the newest).
A pair that cannot be scored (reply unparseable twice, LLM down, circuit open, unknown item,
malformed message) goes to ``pairs-to-score-dlq`` with the original bytes and the reason; the
pairs around it are labelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

from models.rubric import Example
from models.scorer import PairScorer, ScoringFailed
from models.text import PRODUCT_FIELDS
from streams.core import dead_letters, metrics
from streams.core.config import Settings
from streams.core.dead_letters import DeadLetter
from streams.core.events import InvalidEvent
from streams.core.records import TIERS, PairToScore
from streams.core.storage import Storage
from streams.core.storage.items import latest_items_sql, products
from streams.core.storage.labels import LabelRow, effective_sql, existing_labels, write_labels

log = logging.getLogger(__name__)


@dataclass
class RoutedPair:
    item_a: str
    item_b: str
    tier: str
    key: bytes | None
    raw: bytes
    partition: int = -1  # where the message sat on pairs-to-score (the DLQ headers say it)
    offset: int = -1


@dataclass
class LabelReport:
    labelled: dict[str, int]
    cached: int
    dead: dict[str, int]
    seconds: float


def parse_routed(key: bytes | None, raw: bytes) -> RoutedPair:
    """A ``pairs-to-score`` message as the labeller works on it (``PairToScore.parse``)."""
    record = PairToScore.parse(raw)
    return RoutedPair(record.item_a, record.item_b, record.tier, key, raw)


class Labeller:
    def __init__(self, settings: Settings, storage: Storage, scorer: PairScorer, producer=None):
        self.settings = settings
        self.storage = storage
        self.scorer = scorer
        self.producer = producer  # aiokafka producer for the dead-letter topic

    @property
    def backend_name(self) -> str:
        return self.scorer.backend.name

    @property
    def source(self) -> str:
        return "heuristic" if self.backend_name == "heuristic" else "llm"

    async def handle(self, messages: list[tuple]) -> LabelReport:
        """Label a batch of ``pairs-to-score`` messages: (key, value) or (key, value,
        partition, offset); what cannot be labelled goes to the DLQ with its position."""
        started = time.perf_counter()
        dead: list[DeadLetter] = []
        pairs: dict[tuple[str, str], RoutedPair] = {}
        topic = self.settings.topic_pairs_to_score
        for key, raw, *position in messages:
            try:
                pair = dataclasses.replace(parse_routed(key, raw), **dict(zip(("partition", "offset"), position)))
            except InvalidEvent as exc:
                dead.append(DeadLetter(key, raw, "bad_message", str(exc), topic, *position))
                continue
            seen = pairs.get((pair.item_a, pair.item_b))
            if seen is None or TIERS.index(pair.tier) > TIERS.index(seen.tier):
                pairs[(pair.item_a, pair.item_b)] = pair
        existing = await asyncio.to_thread(existing_labels, self.storage, list(pairs))
        high = [ids for ids, pair in pairs.items() if pair.tier == "high"]
        evidence = await asyncio.to_thread(self._evidence, high) if high else {}
        rows: list[LabelRow] = []
        to_score: list[RoutedPair] = []
        cached = 0
        version = self.scorer.prompt_version
        for ids, pair in pairs.items():
            have = existing.get(ids, [])
            if any(source == "manual" for source, _, _ in have):
                cached += 1
            elif pair.tier == "high" and evidence.get(ids, {}).get("lift", 0.0) >= \
                    self.settings.behaviour_default_min_lift:
                if any(source == "behaviour" for source, _, _ in have):
                    cached += 1
                else:
                    rows.append(self._behaviour_label(pair, evidence[ids]))
            elif any(s == self.source and b == self.backend_name and v == version for s, b, v in have):
                cached += 1
            else:
                to_score.append(pair)
        metrics.LABEL_SKIPS.inc(cached)
        if to_score:
            rows += await self._score(to_score, dead)
        await asyncio.to_thread(write_labels, self.storage, rows)
        labelled: dict[str, int] = {}
        for row in rows:
            labelled[row.source] = labelled.get(row.source, 0) + 1
            metrics.LABELS.labels(source=row.source).inc()
        if dead:
            await self._dead_letter(dead)
        reasons: dict[str, int] = {}
        for reason in (letter.reason for letter in dead):
            reasons[reason] = reasons.get(reason, 0) + 1
        return LabelReport(labelled, cached, reasons, time.perf_counter() - started)

    def _evidence(self, pairs: list[tuple[str, str]]) -> dict:
        from streams.core.storage.stats import StatsParams, pair_evidence

        return pair_evidence(self.storage, pairs, StatsParams.from_settings(self.settings))

    @staticmethod
    def _behaviour_label(pair: RoutedPair, evidence: dict) -> LabelRow:
        from models.blend import behaviour_score

        lift = float(evidence["lift"])
        score = float(behaviour_score(lift))
        return LabelRow(pair.item_a, pair.item_b, score, "high", "behaviour", "none", "", "", {},
                        {"all": f"behaviour: co-clicked {evidence['count']} times by {evidence['users']} "
                                f"users, lift {lift:.2f} over what popularity predicts"})

    async def _score(self, pairs: list[RoutedPair], dead: list) -> list[LabelRow]:
        ids = sorted({p.item_a for p in pairs} | {p.item_b for p in pairs})
        found = await asyncio.to_thread(products, self.storage, ids)
        wanted: set[tuple[str, str]] = set()
        for pair in pairs:
            a, b = found.get(pair.item_a), found.get(pair.item_b)
            if pair.tier == "low" and a is not None and b is not None:
                wanted.add(_category_pair(a, b))
        examples: dict[tuple[str, str], list[Example]] = {}
        if wanted and self.settings.few_shot_k > 0:
            examples = await asyncio.to_thread(self._examples, sorted(wanted))
        ready = []
        for pair in pairs:
            a, b = found.get(pair.item_a), found.get(pair.item_b)
            if a is None or b is None:
                missing = pair.item_a if a is None else pair.item_b
                dead.append(self._letter(pair, "unknown_item", f"{missing} is not in the catalogue"))
                continue
            shots: list[Example] = []
            if pair.tier == "low":
                shots = [e for e in examples.get(_category_pair(a, b), [])
                         if {e.product_a.get("item_id"), e.product_b.get("item_id")}
                         != {pair.item_a, pair.item_b}][: self.settings.few_shot_k]
            ready.append((pair, a, b, shots))
        results = await asyncio.gather(*(self.scorer.score(a, b, shots) for _, a, b, shots in ready),
                                       return_exceptions=True)
        rows = []
        now = time.time()
        for (pair, _, _, shots), result in zip(ready, results):
            if isinstance(result, ScoringFailed):
                dead.append(self._letter(pair, result.reason, result.detail))
                continue
            if isinstance(result, BaseException):
                raise result
            reasons = dict(result.dim_reasons)
            if shots:
                reasons["few_shot"] = f"{len(shots)} examples of the same category pair"
            rows.append(LabelRow(
                pair.item_a, pair.item_b, result.score, pair.tier, self.source, self.backend_name,
                self.scorer.backend.model_name, self.scorer.prompt_version,
                result.dim_scores, reasons, result.dim_dists, now))
        return rows

    def _examples(self, category_pairs: list[tuple[str, str]]) -> dict[tuple[str, str], list[Example]]:
        """Labelled pairs per category pair (manual first, then the newest), in one query."""
        st = self.storage
        latest = latest_items_sql(st)
        table = st.query_arrow(
            f"""SELECT l.item_a AS a, l.item_b AS b, l.score AS score,
                       least(ia.category, ib.category) AS c1, greatest(ia.category, ib.category) AS c2,
                       {', '.join(f'ia.{c} AS a_{c}' for c in PRODUCT_FIELDS)},
                       {', '.join(f'ib.{c} AS b_{c}' for c in PRODUCT_FIELDS)}
                FROM ({effective_sql(st, "source IN ('manual', 'llm', 'default')")}) AS l
                INNER JOIN ({latest}) AS ia ON ia.item_id = l.item_a
                INNER JOIN ({latest}) AS ib ON ib.item_id = l.item_b
                WHERE (c1, c2) IN arrayZip({{c1s:Array(String)}}, {{c2s:Array(String)}})
                ORDER BY c1, c2, l.source = 'manual' DESC, l.labelled_at DESC
                LIMIT {{k:UInt32}} BY c1, c2""",
            {"c1s": [c[0] for c in category_pairs], "c2s": [c[1] for c in category_pairs],
             "k": self.settings.few_shot_k + 1})
        out: dict[tuple[str, str], list[Example]] = {}
        for row in table.to_pylist() if table.num_rows else []:
            a = {"item_id": row["a"], **{c: row[f"a_{c}"] for c in PRODUCT_FIELDS}}
            b = {"item_id": row["b"], **{c: row[f"b_{c}"] for c in PRODUCT_FIELDS}}
            out.setdefault((row["c1"], row["c2"]), []).append(Example(a, b, int(round(row["score"]))))
        return out

    def _letter(self, pair: RoutedPair, reason: str, detail: str) -> DeadLetter:
        return DeadLetter(pair.key, pair.raw, reason, detail, self.settings.topic_pairs_to_score,
                          pair.partition, pair.offset)

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        for letter in dead:
            log.warning("pair dead-lettered (%s): %s", letter.reason, letter.detail[:200])
        if self.producer is None:
            raise RuntimeError("dead letters but no producer")
        await dead_letters.send(self.producer, self.settings.topic_pairs_to_score_dlq, dead)


def build_scorer(settings: Settings) -> PairScorer:
    """The rubric and the guarded backend that the settings name."""
    from models.llm import make_backend
    from models.llm.guard import GuardedBackend
    from models.rubric import load_rubric

    backend = make_backend(settings.llm_backend, url=settings.llm_url, model=settings.llm_model,
                           api_key=settings.llm_api_key, timeout_s=settings.llm_timeout_s)
    remote = backend.name == "openai"  # the rate limit protects an endpoint, not local models
    # a local model runs one prompt at a time (``HFBackend``'s lock): prompts queue in the
    # guard, before the timeout starts, instead of timing out while they wait for the model
    guarded = GuardedBackend(backend, timeout_s=settings.llm_timeout_s, retries=settings.llm_retries,
                             concurrency=settings.llm_concurrency if remote else 1,
                             rate_per_s=settings.llm_rate_per_s if remote else 0)
    return PairScorer(load_rubric(settings.rubric_path), guarded)


def _category_pair(a: dict, b: dict) -> tuple[str, str]:
    """The few-shot examples' key: the two items' categories in order."""
    first, second = sorted((str(a["category"]), str(b["category"])))
    return first, second
