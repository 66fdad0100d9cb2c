"""The batch decoder gives exactly what the per-message validator gives, bad input included."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import orjson

from streams.core.events import InvalidEvent, click_fields
from streams.ingest import decode as click_decode
from streams.ingest.decode import decode_clicks

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
    # fields the decoder does not read are still JSON: the per-message rules reject them
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "note": "\xff\xfe"}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "\xc3(": 1}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "price": 1e400}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "x": [{"y": -1E+400}]}',
    b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "n": 1' + b"0" * 400 + b'}',
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


def _click(ts=NOW - 60, **extra) -> bytes:
    return orjson.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "ts": ts, **extra})


def test_deep_nesting_is_a_dead_letter_not_a_crash():
    """msgspec raises RecursionError past ~1000 levels; orjson rejects past 1024. A click
    nested 2000 deep in an extra field is bad_json; 900 deep is still a valid click."""
    def deep(d: int) -> bytes:
        return b'{"event_id":"e","user_id":"u","item_id":"i","ts":%d,"x":%s}' % (
            NOW - 60, b"[" * d + b"]" * d)
    messages = [Message(_click(), None, 0), Message(deep(2000), None, 1),
                Message(deep(1000), None, 2), Message(deep(900), None, 3), Message(_click(), None, 4)]
    got = decode_clicks(messages, NOW)
    assert [(m.offset, bad.reason) for m, bad in got.dead] == [(1, "bad_json")]
    assert len(got.users) == 4


def test_times_the_tables_cannot_hold_are_bad_ts_even_with_a_matching_kafka_timestamp():
    for ts in (5_900_000_000, 4_102_444_800):  # year 2156, 2100-01-01
        got = decode_clicks([Message(_click(ts), int(ts * 1000), 0)], NOW)
        assert [bad.reason for _, bad in got.dead] == ["bad_ts"], ts
    got = decode_clicks([Message(_click(4_102_444_799), 4_102_444_799_000, 0)], NOW)
    assert got.times == [4_102_444_799.0]  # the last second of 2099 is still fine


def test_an_exception_while_decoding_one_message_dead_letters_only_that_message(monkeypatch):
    real = click_decode.click_fields

    def flaky(raw, *args):
        if b'"poison"' in raw:
            raise ZeroDivisionError("injected")
        return real(raw, *args)

    monkeypatch.setattr(click_decode, "click_fields", flaky)
    messages = [Message(_click(), None, 0), Message(_click(action="poison"), None, 1),
                Message(b"{bad", None, 2), Message(_click(), None, 3)]
    got = decode_clicks(messages, NOW)
    assert [(m.offset, bad.reason) for m, bad in got.dead] == [(1, "internal_error"), (2, "bad_json")]
    assert "ZeroDivisionError" in got.dead[0][1].detail and len(got.users) == 2


def _fuzz_value(rng: random.Random):
    """A JSON value or a raw token: the shapes a careless or hostile producer sends."""
    return rng.choice([
        None, True, False, 0, -1, 1.5, -0.0, 1e300, 2 ** 64, -2 ** 63, NOW - 5, NOW + 86_399,
        NOW + 86_401, 4_102_444_799, 4_102_444_800, "", "x", "a" * 128, "a" * 129, "é" * 128,
        "\u0000", " ", "1700000000", [], {}, [1, [2, [3]]], {"ts": 1}])


# Raw values for a field the decoder does not read: JSON libraries differ on each of these.
UNUSED_TOKENS = [b"1e400", b"-1E+400", b"1e-400", b"1" + b"0" * 400, b"18446744073709551616",
                 b"[1e400]", b'{"k": 1e999}', b'"\xff"', b'"a\xc3("', b'"\\ud800"', b'"\xed\xa0\x80"',
                 b"NaN", b"-Infinity", b'"ok"', b'"a:b"', b"0.5"]
UNUSED_KEYS = [b'"extra"', b'"\xff"', b'"k\xe2\x82"', b'"a:b"', b'"ts"', b'"user_id"']


def _with_unused_field(raw: bytes, rng: random.Random) -> bytes:
    """Insert ``key: token`` at the front of an object, raw bytes and all."""
    field = rng.choice(UNUSED_KEYS) + b": " + rng.choice(UNUSED_TOKENS)
    return raw.replace(b"{", b"{" + field + b", ", 1) if raw.startswith(b"{") else raw


def _fuzz_message(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.1:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    body = {"event_id": "e", "user_id": "u", "item_id": "i", "ts": NOW - 5}
    for key in ("event_id", "user_id", "item_id", "ts", "action", "extra"):
        roll = rng.random()
        if roll < 0.12:
            body.pop(key, None)
        elif roll < 0.3:
            body[key] = _fuzz_value(rng)
    raw = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()  # big ints too
    if kind < 0.2:  # truncated
        raw = raw[:rng.randrange(len(raw) + 1)]
    elif kind < 0.25:  # a duplicate key ahead of the real one
        raw = raw.replace(b"{", b'{"user_id": 7, "ts": "x", ', 1)
    elif kind < 0.28:  # raw tokens JSON libraries disagree on
        raw = raw.replace(b'"ts":', b'"ts": ' + rng.choice([b"NaN,", b"Infinity,", b"1e400,", b"-0,"]) + b'"t":')
    elif kind < 0.3:
        raw = b"\xef\xbb\xbf" + raw  # a byte-order mark
    elif kind < 0.5:  # fields nobody reads, with keys and values JSON libraries disagree on
        raw = _with_unused_field(raw, rng)
        if rng.random() < 0.3:
            raw = _with_unused_field(raw, rng)
    return raw


def test_fuzz_fast_and_per_message_paths_agree_and_never_raise():
    """Thousands of random shapes, one at a time through the fast decoder (so its own
    verdict is checked, not the slow path's fallback) and in mixed chunks with good clicks
    around them: same final decision, no exception, good clicks counted exactly."""
    rng = random.Random(20)
    messages = []
    for k in range(4000):
        raw = _fuzz_message(rng)
        stamp = rng.choice([None, int(NOW * 1000)])
        msg = Message(raw, stamp, k)
        try:
            click_fields(raw, NOW, 65536, 86400)
            accepted = True
        except InvalidEvent:
            accepted = False
        fast = click_decode.DecodedClicks()
        fast_accepted = click_decode._decode_fast([msg], NOW, 65536, 86400, fast)
        # the fast path may pass a message on to the slow one (it does for duplicate keys,
        # where msgspec checks every occurrence and orjson keeps the last), never accept more
        assert accepted or not fast_accepted, raw
        messages.append(msg)
        messages.append(Message(_click(ts=NOW - k), None, k))  # a good click after each
    got = decode_clicks(messages, NOW)
    users, items, times, reasons = _expected(messages)
    assert (got.users, got.items, got.times) == (users, items, times)
    assert [(m.offset, bad.reason) for m, bad in got.dead] == reasons
    assert len(got.users) >= 4000 and len(reasons) > 500  # the fuzz found plenty of both
