"""Event schemas: the JSON the event pipeline produces to ``clicks`` and ``items``.

Validation is hand-written rather than done by Faust Records: it runs on the hot ingest
path (one call per click, ~1 µs) and must say *why* an event is rejected so it can go to the
dead-letter topic with a reason. Reasons are a small fixed set (they label metrics).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import orjson

MAX_ID_CHARS = 128

# Reasons an event is rejected; each is one metrics label value.
REASONS = ("too_large", "bad_json", "not_object", "missing_field", "bad_type", "bad_ts", "future_ts",
           "internal_error")
# Event times the tables can hold: pair_counts keys days as UInt16 since 1970 (ends 2149) and
# DateTime ends in 2106, so anything from 2100 on is rejected as bad_ts rather than crashing
# the write path (or being written to a nonsense day) further down.
MAX_TS = 4_102_444_800.0  # 2100-01-01T00:00:00Z


class InvalidEvent(ValueError):
    """A message that cannot be processed; for clicks ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Click:
    event_id: str
    user_id: str
    item_id: str
    ts: float
    action: str = "click"

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    category: str
    title: str = ""
    brand: str = ""
    color: str = ""
    condition: str = ""
    model: str = ""
    price: float | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


def _load_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"{len(raw)} bytes > {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _req_id(obj: dict, name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent("missing_field", name)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidEvent("bad_type", f"{name} must be a non-empty string of <= {MAX_ID_CHARS} chars")
    return value


def _opt_str(obj: dict, name: str, default: str = "") -> str:
    value = obj.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"{name} must be a string")
    return value


def parse_click(
    raw: bytes, now: float, max_bytes: int = 65536, max_future_s: float = 86400
) -> Click:
    """Decode and validate one click message; raise ``InvalidEvent`` with a reason."""
    obj = _load_object(raw, max_bytes)
    event_id = _req_id(obj, "event_id")
    user_id = _req_id(obj, "user_id")
    item_id = _req_id(obj, "item_id")
    ts = obj.get("ts")
    if ts is None:
        raise InvalidEvent("missing_field", "ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise InvalidEvent("bad_type", "ts must be a number (unix seconds)")
    ts = float(ts)
    if not math.isfinite(ts) or ts < 0 or ts >= MAX_TS:
        raise InvalidEvent("bad_ts", f"ts {ts!r} is not a unix time in [1970-01-01, 2100-01-01)")
    if ts > now + max_future_s:
        raise InvalidEvent("future_ts", f"ts {ts:.0f} is more than {max_future_s:.0f}s ahead")
    action = _opt_str(obj, "action", "click") or "click"
    return Click(event_id, user_id, item_id, ts, action)


def click_fields(
    raw: bytes, now: float, max_bytes: int = 65536, max_future_s: float = 86400,
    _loads=orjson.loads, _str=str, _float=float, _int=int, _dict=dict,
) -> tuple[str, str, float]:
    """The ingest's hot path: (user_id, item_id, ts) of a valid click, same rules as
    ``parse_click`` (which it falls back to for the reason when anything is off)."""
    if len(raw) <= max_bytes:
        try:
            obj = _loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is _dict:
            user, item, ts, event_id = obj.get("user_id"), obj.get("item_id"), obj.get("ts"), obj.get("event_id")
            if (type(user) is _str and type(item) is _str and type(event_id) is _str
                    and 0 < len(user) <= MAX_ID_CHARS and 0 < len(item) <= MAX_ID_CHARS
                    and 0 < len(event_id) <= MAX_ID_CHARS
                    and (type(ts) is _float or type(ts) is _int)
                    and 0 <= ts <= now + max_future_s and ts < MAX_TS
                    and type(obj.get("action", "")) in (_str, type(None))):
                return user, item, _float(ts)
    click = parse_click(raw, now, max_bytes, max_future_s)  # raises with the reason
    return click.user_id, click.item_id, click.ts


def parse_item(raw: bytes, max_bytes: int = 65536) -> Item:
    """Decode and validate one catalogue message."""
    obj = _load_object(raw, max_bytes)
    item_id = _req_id(obj, "item_id")
    category = _req_id(obj, "category")
    price = obj.get("price")
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price):
            raise InvalidEvent("bad_type", "price must be a finite number")
        price = float(price)
    return Item(
        item_id=item_id,
        category=category,
        title=_opt_str(obj, "title"),
        brand=_opt_str(obj, "brand"),
        color=_opt_str(obj, "color"),
        condition=_opt_str(obj, "condition"),
        model=_opt_str(obj, "model"),
        price=price,
    )
