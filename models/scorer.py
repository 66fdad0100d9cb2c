"""Score one pair on the rubric's five dimensions, concurrently, into a weighted 1..10 score.

Prompt splitting: each dimension is its own short prompt and the five run at once, so a pair
costs about one prompt's latency. A reply that does not parse is asked once more; a second
failure, or a backend that stays down, fails the pair with a reason (the caller dead-letters it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from models.llm.base import BackendError, DimensionRequest, TransientError
from models.llm.guard import CircuitOpen
from models.reply import DimensionReply, ReplyError
from models.rubric import DIMENSIONS, Example, Rubric


class ScoringFailed(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class PairScore:
    score: float
    dim_scores: dict[str, float]
    dim_reasons: dict[str, str]
    dim_dists: dict[str, list[float]] = field(default_factory=dict)


class PairScorer:
    def __init__(self, rubric: Rubric, backend):
        self.rubric = rubric
        self.backend = backend  # a GuardedBackend (or any object with async score(request))

    @property
    def prompt_version(self) -> str:
        return self.rubric.prompt_version

    async def _dimension(self, dim: str, a, b, examples) -> DimensionReply:
        request = DimensionRequest(dim, self.rubric.messages(dim, a, b, examples), a, b)
        try:
            return await self.backend.score(request)
        except ReplyError:
            return await self.backend.score(request)  # asked once more, then it counts

    async def score(self, product_a: Mapping[str, object], product_b: Mapping[str, object],
                    examples: Sequence[Example] = ()) -> PairScore:
        results = await asyncio.gather(
            *(self._dimension(d, product_a, product_b, examples) for d in DIMENSIONS),
            return_exceptions=True)
        replies: dict[str, DimensionReply] = {}
        for dimension, result in zip(DIMENSIONS, results):
            if isinstance(result, BaseException):
                raise _failure(result)
            replies[dimension] = result
        scores = {d: float(r.score) for d, r in replies.items()}
        return PairScore(
            score=round(self.rubric.combine(scores), 4),
            dim_scores=scores,
            dim_reasons={d: r.reason for d, r in replies.items()},
            dim_dists={d: list(r.distribution) for d, r in replies.items() if r.distribution},
        )


def _failure(exc: BaseException) -> ScoringFailed:
    if isinstance(exc, ReplyError):
        return ScoringFailed("unparseable_reply", str(exc))
    if isinstance(exc, CircuitOpen):
        return ScoringFailed("circuit_open", str(exc))
    if isinstance(exc, TransientError):
        return ScoringFailed("llm_unavailable", str(exc))
    if isinstance(exc, BackendError):
        return ScoringFailed("backend_error", str(exc))
    raise exc  # a bug, not an LLM failure: let it surface
