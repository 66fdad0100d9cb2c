"""What the worker samples for on-call on a timer: consumer lag of its own groups and the
freshness of every table the re-ranker and the trainer read, both as Prometheus gauges (the
dashboard's lag and freshness panels, the /status page's lag table)."""

from __future__ import annotations

import asyncio
import logging

from streams.core import metrics
from streams.core.storage import Storage
from streams.ops.lag import STATUS_CODES, LagSampler

log = logging.getLogger(__name__)

# (table, time column) whose newest row is its freshness; pair_counts' is its newest batch
FRESHNESS = (("ingest_batches", "created_at"), ("items", "updated_at"), ("pair_tiers", "routed_at"),
             ("pair_labels", "labelled_at"), ("pair_stats", "computed_at"),
             ("pair_scores", "scored_at"), ("training_runs", "updated_at"))


async def sample_on_call(lag: LagExport, storage: Storage) -> bool:
    """The worker's sampling timer: lag, then freshness, off the event loop. A sample that
    fails (the broker or ClickHouse unreachable) is logged and the gauges keep their last
    values: Faust stops the whole worker on an exception from a timer, and the stale gauges
    and the next sample tell on-call the rest."""
    try:
        await asyncio.to_thread(lag.sample)
        await asyncio.to_thread(sample_freshness, storage)
        return True
    except Exception as exc:  # noqa: BLE001 - anything a client library raises
        log.warning("on-call sampling failed (next try on the next tick): %s", exc)
        return False


def sample_freshness(storage: Storage) -> None:
    """Newest row time of each table, as ``pairstream_table_newest_timestamp_seconds``."""
    for table, column in FRESHNESS:
        value = storage.query_value(f"SELECT toFloat64(max({column})) FROM {storage.table(table)}")
        if value:
            metrics.TABLE_NEWEST.labels(table="pair_counts" if table == "ingest_batches" else table).set(value)
    through = scores_behaviour_through(storage)
    if through:
        metrics.SCORES_BEHAVIOUR_THROUGH.set(through)


def scores_behaviour_through(storage: Storage) -> float | None:
    """Clicks up to this time (seconds) are in the live published scores; None before a publish."""
    from streams.core.storage import scores

    live = scores.live(storage)
    state = scores.refresh_state(storage, live["score_version"]) if live else None
    return state["through"] if state else None


class LagExport:
    """Lag of ``groups`` per topic and partition, judged by Burrow's rules (``streams.ops.lag``);
    ``rows`` holds the newest table. The admin connection opens on the first sample."""

    def __init__(self, bootstrap: str, groups: list[str], warn_s: float, window: int = 10):
        self.bootstrap = bootstrap
        self.groups = groups
        self.warn_s = warn_s
        self.window = window
        self.rows: list[dict] = []
        self._sampler: LagSampler | None = None

    def sample(self) -> None:
        if self._sampler is None:
            self._sampler = LagSampler(self.bootstrap, self.warn_s)
        self._sampler.sample(self.groups)
        self.rows = self._sampler.table(self.window)
        for row in self.rows:
            labels = (row["group"], row["topic"], str(row["partition"]))
            metrics.CONSUMER_LAG.labels(*labels).set(row["lag"])
            metrics.CONSUMER_LAG_STATUS.labels(*labels).set(STATUS_CODES[row["status"]])
            if row["lag_seconds"] is not None:
                metrics.CONSUMER_LAG_SECONDS.labels(*labels).set(row["lag_seconds"])

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
