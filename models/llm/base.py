"""What every scoring backend implements: one dimension of one pair -> a 1..10 reply."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

from models.reply import DimensionReply


class BackendError(Exception):
    """A failure that retrying will not fix (bad request, missing model, wrong key)."""


class TransientError(Exception):
    """A failure worth retrying (timeout, connection refused, 429, 5xx)."""


@dataclass(frozen=True)
class DimensionRequest:
    dimension: str
    messages: list[dict]  # the rendered prompt (system + user)
    product_a: Mapping[str, object]
    product_b: Mapping[str, object]


class Backend(ABC):
    name: str = "backend"
    model_name: str = ""

    @abstractmethod
    async def score(self, request: DimensionRequest) -> DimensionReply:
        """Score one dimension; raise ``ReplyError`` for an unparseable reply."""

    async def close(self) -> None:  # noqa: B027 - an optional hook: most backends hold nothing
        """Release connections or models."""
