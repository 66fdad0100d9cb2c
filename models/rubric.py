"""The scoring rubric: dimensions, weights and prompt templates, loaded from YAML.

Prompt safety: product fields are serialised with ``json.dumps`` (quotes, newlines and
control characters escaped) and ``<``/``>`` are escaped as ``\\u003c``/``\\u003e``, so no
product text can close the ``<product_a>`` tag or start a line of its own; the system message
says that text is data. The reply format is checked strictly by ``models.reply``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from models.text import PRODUCT_FIELDS

DIMENSIONS = ("category", "colour", "brand", "condition", "model")
PACKAGED = Path(__file__).with_name("rubric.yaml")
# the pair (and any examples) first, the aspect's question last: the five prompts of a pair then
# share all but their last line, so a backend that reuses a prompt's prefix (``HFBackend``, or a
# server with prefix caching) computes the pair once instead of five times
PROMPT_LAYOUT = "pair-then-aspect"


class RubricError(ValueError):
    """The rubric file is invalid; the message names the problem."""


@dataclass(frozen=True)
class Dimension:
    name: str
    weight: float
    version: str
    question: str


@dataclass(frozen=True)
class Example:
    """A labelled pair shown to the LLM for long-tail pairs (few-shot)."""

    product_a: Mapping[str, object]
    product_b: Mapping[str, object]
    score: int


@dataclass(frozen=True)
class Rubric:
    system: str
    dimensions: tuple[Dimension, ...]
    few_shot_intro: str

    @property
    def prompt_version(self) -> str:
        """One id for the whole rubric: changes when any prompt, weight, the system text or the
        layout of the messages does."""
        text = json.dumps([PROMPT_LAYOUT, self.system, self.few_shot_intro,
                           [(d.name, d.weight, d.version, d.question) for d in self.dimensions]])
        versions = "-".join(d.version for d in self.dimensions)
        return f"{versions}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"

    def weights(self) -> dict[str, float]:
        return {d.name: d.weight for d in self.dimensions}

    def combine(self, scores: Mapping[str, float]) -> float:
        """Weighted sum of the per-dimension 1..10 scores (weights sum to 1, so still 1..10)."""
        return sum(d.weight * float(scores[d.name]) for d in self.dimensions)

    def messages(self, dimension: str, product_a: Mapping[str, object],
                 product_b: Mapping[str, object], examples: Sequence[Example] = ()) -> list[dict]:
        """The chat messages of one dimension's prompt for one pair."""
        dim = next(d for d in self.dimensions if d.name == dimension)
        parts = []
        if examples:
            parts.append(self.few_shot_intro)
            for ex in examples:
                parts.append(f"<product_a>{quote(ex.product_a)}</product_a>\n"
                             f"<product_b>{quote(ex.product_b)}</product_b>\nscore: {ex.score}")
            parts.append("Now the pair to rate:")
        parts.append(f"<product_a>{quote(product_a)}</product_a>\n"
                     f"<product_b>{quote(product_b)}</product_b>")
        parts.append(f"Aspect: {dim.name}. {dim.question}")
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": "\n\n".join(parts)}]


def quote(product: Mapping[str, object]) -> str:
    """Product fields as one line of JSON that cannot break out of its tag."""
    data = {k: product.get(k, "") for k in PRODUCT_FIELDS}
    text = json.dumps(data, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def load_rubric(path: str | Path | None = None) -> Rubric:
    """Load and validate a rubric; ``None`` or ``""`` is the packaged one."""
    source = Path(path) if path else PACKAGED
    try:
        raw = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RubricError(f"cannot read rubric {source}: {exc}") from exc
    if not isinstance(raw, dict) or "dimensions" not in raw or "system" not in raw:
        raise RubricError(f"{source}: needs 'system' and 'dimensions'")
    dims = raw["dimensions"]
    if set(dims) != set(DIMENSIONS):
        raise RubricError(f"{source}: dimensions must be exactly {sorted(DIMENSIONS)}, got {sorted(dims)}")
    out = []
    for name in DIMENSIONS:
        spec = dims[name]
        try:
            dim = Dimension(name, float(spec["weight"]), str(spec["version"]), str(spec["question"]).strip())
        except (KeyError, TypeError, ValueError) as exc:
            raise RubricError(f"{source}: dimension {name!r} needs weight, version, question") from exc
        if not 0 <= dim.weight <= 1:
            raise RubricError(f"{source}: weight of {name!r} must be within 0..1")
        out.append(dim)
    total = sum(d.weight for d in out)
    if abs(total - 1.0) > 1e-6:
        raise RubricError(f"{source}: weights must sum to 1, they sum to {total:.4f}")
    return Rubric(str(raw["system"]).strip(), tuple(out),
                  str(raw.get("few_shot_intro", "Examples:")).strip())
