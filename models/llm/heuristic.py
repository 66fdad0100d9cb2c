"""Rules over the item attributes, for demos and tests without an LLM.

Every label it makes carries ``backend=heuristic`` (and source ``heuristic``), so nobody
mistakes it for an LLM judgement. The rules are generic: they read category names, titles,
brands, models, colours and conditions, not the synthetic generator's tables.
"""

from __future__ import annotations

import re

from models.llm.base import Backend, DimensionRequest
from models.reply import DimensionReply

CONDITIONS = {"new": 4, "like new": 3, "good": 2, "fair": 1, "for parts": 0}
NEUTRAL_COLOURS = {"black", "white", "grey", "gray", "silver", "clear", "transparent"}
UNSPECIFIC = {"", "any", "none", "unknown"}


def _text(product, field) -> str:
    return str(product.get(field) or "").strip().lower()


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _category(a, b) -> tuple[int, str]:
    ca, cb = _text(a, "category"), _text(b, "category")
    if not ca or not cb:
        return 5, "a category is unknown"
    if ca == cb:
        return 1, f"both are {ca}: alternatives, not complements"
    if _tokens(ca) & _tokens(cb) or _mentions(a, b) or _mentions(b, a):
        return 9, f"{ca} and {cb} are bought together"
    return 4, f"{ca} and {cb} are not obviously related"


def _mentions(accessory, anchor) -> bool:
    """The accessory's title names the anchor's model (``case for iPhone 13``)."""
    model = _text(anchor, "model")
    return model not in UNSPECIFIC and f"for {model}" in _text(accessory, "title")


def _model(a, b) -> tuple[int, str]:
    ma, mb = _text(a, "model"), _text(b, "model")
    if _mentions(a, b) or _mentions(b, a):
        return 10, "made for the other's model"
    if ma in UNSPECIFIC or mb in UNSPECIFIC:
        return 6, "fit does not depend on the model"
    if ma == mb:
        return 10, f"same model/fit: {ma}"
    return 2, f"different fit: {ma} vs {mb}"


def _brand(a, b) -> tuple[int, str]:
    ba, bb = _text(a, "brand"), _text(b, "brand")
    if not ba or not bb:
        return 5, "a brand is unknown"
    if ba == bb:
        return 9, f"same brand ({ba})"
    return 5, f"different brands ({ba}, {bb})"


def _condition(a, b) -> tuple[int, str]:
    ca, cb = CONDITIONS.get(_text(a, "condition")), CONDITIONS.get(_text(b, "condition"))
    if ca is None or cb is None:
        return 5, "a condition is unknown"
    score = max(1, 10 - 3 * abs(ca - cb))
    return score, f"conditions {_text(a, 'condition')} and {_text(b, 'condition')}"


def _colour(a, b) -> tuple[int, str]:
    ca, cb = _text(a, "color"), _text(b, "color")
    if not ca or not cb:
        return 5, "a colour is unknown"
    if ca == cb:
        return 9, f"both {ca}"
    if ca in NEUTRAL_COLOURS or cb in NEUTRAL_COLOURS:
        return 7, f"{ca} with {cb}: a neutral colour goes with anything"
    return 4, f"{ca} with {cb}"


RULES = {"category": _category, "model": _model, "brand": _brand,
         "condition": _condition, "colour": _colour}


class HeuristicBackend(Backend):
    name = "heuristic"
    model_name = "rules-v1"

    async def score(self, request: DimensionRequest) -> DimensionReply:
        score, reason = RULES[request.dimension](request.product_a, request.product_b)
        return DimensionReply(float(score), f"heuristic: {reason}")
