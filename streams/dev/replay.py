"""Produce JSON-lines files to Kafka: items (key item_id) first, then clicks (key user_id).

Lines are sent as they are (byte for byte, the file *is* the Kafka message), so a replay can
also carry bad events to exercise the dead-letter path. Keys are read from the JSON where it
parses; an unparsable line is sent without a key.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable

import orjson
from tqdm import tqdm


def _key(line: bytes, field: str) -> bytes | None:
    try:
        value = orjson.loads(line).get(field)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return str(value).encode() if value is not None else None


def _lines(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line:
                yield line


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def produce_file(
    producer,
    topic: str,
    path: Path,
    key_field: str,
    rate: float | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> int:
    """Send every line of ``path``; ``rate`` caps messages per second. Returns the count.

    ``stop`` set from another thread ends the replay at the next line, unflushed: a Ctrl-C must
    not wait for the rest of a file."""
    total = count_lines(path)
    sent = 0
    start = time.monotonic()
    with tqdm(total=total, desc=f"{topic:>8}", unit="msg", disable=not progress) as bar:
        for line in _lines(path):
            if stop is not None and stop.is_set():
                return sent
            producer.send(topic, key=_key(line, key_field), value=line)
            sent += 1
            if sent % 1000 == 0:
                bar.update(1000)
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        bar.update(sent % 1000)
        producer.flush()
    return sent


def make_producer(bootstrap: str):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        batch_size=256 * 1024,
        acks="all",
        max_request_size=2 * 1024 * 1024,
    )


def replay(
    bootstrap: str,
    clicks: Path | None,
    items: Path | None,
    topic_clicks: str = "clicks",
    topic_items: str = "items",
    rate: float | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    producer = make_producer(bootstrap)
    try:
        counts = {}
        if items:
            counts["items"] = produce_file(producer, topic_items, items, "item_id", None, progress, stop)
        if clicks and not (stop is not None and stop.is_set()):
            counts["clicks"] = produce_file(producer, topic_clicks, clicks, "user_id", rate, progress, stop)
        return counts
    finally:
        producer.close(timeout=1 if stop is not None and stop.is_set() else None)
