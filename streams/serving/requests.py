"""Requests to the lookup API, checked: what a body or a query may hold, and the 4xx it gets
otherwise (bad JSON, ids that are not strings, empty or over 128 characters, equal items,
malformed pairs, too many pairs, ``k`` out of range)."""

from __future__ import annotations

import asyncio

import orjson

from streams.core.events import MAX_ID_CHARS

MAX_PARTNERS = 1000
PARSE_CHUNK = 128  # pairs checked between yields when a request body is parsed


class BadRequest(ValueError):
    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


def check_id(value, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: item id must be a string, not {type(value).__name__}")
    if not value:
        raise BadRequest(f"{where}: item id is empty")
    if len(value) > MAX_ID_CHARS:
        raise BadRequest(f"{where}: item id longer than {MAX_ID_CHARS} characters")
    return value


async def parse_pairs(body: bytes, max_pairs: int) -> list[tuple[str, str]]:
    """The checked pairs of a lookup body, with a yield to the event loop every ``PARSE_CHUNK``
    pairs (checking 1000 pairs at once held the loop for most of a millisecond)."""
    pairs = _pairs_of(body, max_pairs)
    out: list[tuple[str, str]] = []
    for start in range(0, len(pairs), PARSE_CHUNK):
        if start:
            await asyncio.sleep(0)
        out += _checked(pairs, start, min(start + PARSE_CHUNK, len(pairs)))
    return out


def _pairs_of(body: bytes, max_pairs: int) -> list:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    pairs = data.get("pairs") if isinstance(data, dict) else data
    if not isinstance(pairs, list):
        raise BadRequest('expected {"pairs": [{"item_a": ..., "item_b": ...}, ...]}')
    if len(pairs) > max_pairs:
        raise BadRequest(f"{len(pairs)} pairs asked, at most {max_pairs} per request", 413)
    return pairs


def _checked(pairs: list, start: int, stop: int) -> list[tuple[str, str]]:
    out = []
    for k in range(start, stop):
        pair = pairs[k]
        if isinstance(pair, dict):
            a, b = pair.get("item_a"), pair.get("item_b")
        elif isinstance(pair, list) and len(pair) == 2:
            a, b = pair
        else:
            raise BadRequest(f"pairs[{k}]: expected {{item_a, item_b}} or [item_a, item_b]")
        a, b = check_id(a, f"pairs[{k}].item_a"), check_id(b, f"pairs[{k}].item_b")
        if a == b:
            raise BadRequest(f"pairs[{k}]: item_a and item_b are the same item")
        out.append((a, b))
    return out




def partners_k(raw_k: str) -> int:
    """``k`` of a partners query: plain ASCII digits from 1 to ``MAX_PARTNERS`` (``str.isdigit``
    passes "²", which ``int`` rejects: once a 500)."""
    if not (raw_k.isascii() and raw_k.isdigit() and len(raw_k) <= 6 and 1 <= int(raw_k) <= MAX_PARTNERS):
        raise BadRequest(f"k must be an integer from 1 to {MAX_PARTNERS}, not {raw_k[:20]!r}")
    return int(raw_k)
