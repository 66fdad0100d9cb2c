"""The worker's on-call sampling timer survives what it samples being down."""

from __future__ import annotations

import asyncio

from streams.core import metrics
from streams.core.storage.labels import LabelRow, write_labels
from streams.ops.sampling import LagExport, sample_on_call
from tests.storage_doubles import Unreachable


def test_sampling_survives_an_unreachable_clickhouse_and_recovers(storage, settings, broker):
    """A ClickHouse outage raised out of the sampling timer, and Faust stops the whole worker
    on an exception from a timer. Now the sample is skipped with a warning, and the next one,
    once ClickHouse answers, fills the gauges again."""

    lag = LagExport(broker.bootstrap, [settings.app_id], settings.lag_warn_s)
    try:
        assert asyncio.run(sample_on_call(lag, Unreachable())) is False
        write_labels(storage, [LabelRow("a1", "b1", 5.0, "low", "llm", "heuristic", "h", "v")])
        assert asyncio.run(sample_on_call(lag, storage)) is True
        assert metrics.TABLE_NEWEST.labels(table="pair_labels")._value.get() > 0
    finally:
        lag.close()
