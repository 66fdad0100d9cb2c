"""Lag figures against the real broker, and Burrow's status rules on constructed histories."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streams.core.topics import ensure_topics
from streams.ops.lag import LagSampler, Sample, evaluate, format_table


def _window(points, start=100.0, step=3.0):
    return [Sample(start + i * step, c, e) for i, (c, e) in enumerate(points)]


@pytest.mark.parametrize("points, now, status", [
    ([(10, 20), (20, 20), (25, 30)], 106, "OK"),          # caught up once in the window
    ([(10, 20), (15, 30), (20, 40)], 106, "WARN"),        # moving, but the lag only grows
    ([(10, 20), (15, 25), (22, 28)], 106, "OK"),          # moving and catching up
    ([(10, 20), (10, 25), (10, 30)], 106, "STALL"),       # not moving while behind
    ([(10, 20), (10, 25), (10, 30)], 120, "STOP"),        # no commit for longer than the window
    ([(30, 40), (20, 40), (25, 40)], 106, "REWIND"),      # the offset went backwards
])
def test_burrow_rules(points, now, status):
    assert evaluate(_window(points), now, last_change_at=100.0 if status in ("STOP", "STALL") else None) == status


def test_lag_of_a_consumer_known_to_be_behind(settings, broker):
    ensure_topics(broker.bootstrap, settings)
    topic, group = settings.topic_clicks, f"{settings.app_id}-behind"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    sent_at = time.time() - 1000  # record i carries the broker timestamp sent_at + i
    for i in range(50):  # one record per batch: Tansu's ListOffsets is exact then (see conftest)
        producer.send(topic, value=b"x", partition=0, timestamp_ms=int((sent_at + i) * 1000))
        producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.commit({tp: OffsetAndMetadata(20, "", -1)})
    sampler = LagSampler(broker.bootstrap)
    try:
        assert group in sampler.groups()
        sampler.sample([group])
        sampler.sample([group])
        row = next(r for r in sampler.table(10) if r["partition"] == 0)
        assert (row["committed"], row["end"], row["lag"]) == (20, 50, 30)
        assert row["status"] == "STALL" and row["rate_per_s"] == 0
        # the age of the oldest unconsumed record (offset 20), though nothing is consumed
        assert row["lag_seconds_source"] == "timestamp"
        assert abs(row["lag_seconds"] - (time.time() - (sent_at + 20))) < 5
        consumer.commit({tp: OffsetAndMetadata(50, "", -1)})
        sampler.sample([group])
        row = next(r for r in sampler.table(10) if r["partition"] == 0)
        assert row["lag"] == 0 and row["status"] == "OK" and row["rate_per_s"] > 0
        assert row["lag_seconds"] == 0.0
        assert "STALL" not in format_table(sampler.table(10))
        # a consumer that moves and keeps up by Burrow's rules is still WARN when its oldest
        # unconsumed record is older than the threshold
        consumer.commit({tp: OffsetAndMetadata(45, "", -1)})
        aged = LagSampler(broker.bootstrap, warn_after_s=600)
        aged.sample([group])
        row = next(r for r in aged.table(10) if r["partition"] == 0)
        aged.close()
        assert row["lag"] == 5 and row["lag_seconds"] > 900 and row["status"] == "WARN"
    finally:
        consumer.close()
        sampler.close()
