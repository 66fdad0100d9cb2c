"""The batch decoder gives exactly what the per-message validator gives, bad input included."""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from streams import click_decode
from streams.click_decode import decode_clicks
from streams.events import InvalidEvent, click_fields

NOW = 1_780_000_000.0

BAD = [
    b"{not json", b"[1, 2]", b'"text"', b"", None,
    b'{"user_id": "u", "item_id": "i", "ts": 1}',
    b'{"event_id": "e", "user_id": 5, "item_id": "i", "ts": 1}',
    b'{"event_id": "e", "user_id": "", "item_id": "i", "ts": 1}',
    b'{"event_id": "e", "user_id": "u", "item_id": "' + b"i" * 129 + b'", "ts": 1}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": "yesterday"}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": true}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": null}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": NaN}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1e400}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": -5}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1780090000}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "action": 3}',
    b'{"event_id": "e", "user_id": "\\ud800", "item_id": "i", "ts": 1}',
    b'{"event_id": "e", "user_id": "u", "item_id": "' + b"x" * 70000 + b'", "ts": 1}',
]


@dataclass
class Message:
    value: bytes | None
    timestamp: int | None
    offset: int = 0


def _good(k: int, rng: random.Random) -> bytes:
    ts = rng.choice([k * 1.5, k, NOW + 80_000])  # floats, ints, near the future bound
    body = {"event_id": f"e{k}", "user_id": f"u{k % 7}", "item_id": f"ï{k % 11}", "ts": ts}
    if k % 3 == 0:
        body["action"] = None if k % 2 else "view"
    return orjson.dumps(body)


def _expected(messages):
    users, items, times, reasons = [], [], [], []
    for msg in messages:
        sent_at = msg.timestamp / 1000.0 if msg.timestamp and msg.timestamp > 0 else NOW
        try:
            user, item, ts = click_fields(msg.value or b"", sent_at, 65536, 86400)
        except InvalidEvent as bad:
            reasons.append((msg.offset, bad.reason))
            continue
        users.append(user)
        items.append(item)
        times.append(ts)
    return users, items, times, reasons


def test_matches_the_per_message_validator(monkeypatch):
    monkeypatch.setattr(click_decode, "CHUNK", 16)  # many chunks, bad ones among good ones
    rng = random.Random(7)
    for trial in range(20):
        messages = []
        for k in range(200):
            value = rng.choice(BAD) if rng.random() < 0.04 * (trial % 3) else _good(k, rng)
            stamp = rng.choice([None, 0, int(NOW * 1000), int((NOW - 90_000) * 1000)])
            messages.append(Message(value, stamp, k))
        got = decode_clicks(messages, NOW)
        users, items, times, reasons = _expected(messages)
        assert (got.users, got.items, got.times) == (users, items, times)
        assert [(m.offset, bad.reason) for m, bad in got.dead] == reasons


def test_every_bad_kind_is_dead_lettered_with_a_reason():
    messages = [Message(value, None, k) for k, value in enumerate(BAD)]
    got = decode_clicks(messages, NOW)
    assert got.users == [] and len(got.dead) == len(BAD)
    assert {bad.reason for _, bad in got.dead} == {
        "bad_json", "not_object", "missing_field", "bad_type", "bad_ts", "future_ts", "too_large"}
