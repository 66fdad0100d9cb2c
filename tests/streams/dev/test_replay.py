"""Replaying JSON-lines files into Kafka: every line arrives byte for byte, keyed by its user,
and a stop signal ends a replay early (the demo's Ctrl-C) without sending the rest."""

from __future__ import annotations

import threading

import orjson
from kafka import KafkaConsumer

from streams.core.topics import ensure_topics
from streams.dev.replay import replay


class StopAfterChecks(threading.Event):
    """A stop signal that trips itself after ``n`` checks: a Ctrl-C at a known line."""

    def __init__(self, n: int):
        super().__init__()
        self.left = n

    def is_set(self) -> bool:
        self.left -= 1
        if self.left < 0:
            self.set()
        return super().is_set()


def _write_clicks(path, n: int) -> list[bytes]:
    lines = [orjson.dumps({"user_id": f"u{i % 17}", "item_id": f"i{i}", "seq": i}) for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def _read_all(bootstrap: str, topic: str, expected: int) -> list:
    """The topic's messages: ``expected`` of them, or what came before 4 s of silence."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=4000)
    try:
        seen = []
        for message in consumer:
            seen.append(message)
            if len(seen) == expected:
                break
        return seen
    finally:
        consumer.close()


def test_replay_sends_every_line_keyed_by_user(settings, broker, tmp_path):
    ensure_topics(broker.bootstrap, settings)
    lines = _write_clicks(tmp_path / "clicks.jsonl", 400)
    counts = replay(broker.bootstrap, tmp_path / "clicks.jsonl", None, settings.topic_clicks, progress=False)
    assert counts == {"clicks": 400}
    seen = _read_all(broker.bootstrap, settings.topic_clicks, len(lines))
    assert sorted(m.value for m in seen) == sorted(lines)
    assert all(m.key == orjson.loads(m.value)["user_id"].encode() for m in seen)


def test_a_stop_signal_ends_the_replay_early(settings, broker, tmp_path):
    ensure_topics(broker.bootstrap, settings)
    lines = _write_clicks(tmp_path / "clicks.jsonl", 1000)
    stop = StopAfterChecks(250)  # one check before the clicks file, then one per line
    counts = replay(broker.bootstrap, tmp_path / "clicks.jsonl", None, settings.topic_clicks,
                    progress=False, stop=stop)
    assert counts == {"clicks": 249}
    seen = _read_all(broker.bootstrap, settings.topic_clicks, 250)  # 250: a 250th would be a bug
    assert len(seen) <= 249
    assert {m.value for m in seen} <= set(lines[:249])
