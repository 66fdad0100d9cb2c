"""The Faust app: the worker's lifecycle, its agents, services and timers.

- ``catalogue`` agent: the compacted ``items`` topic -> ClickHouse ``items`` + the in-memory
  catalogue that pairing reads (low rate: a Faust agent with ``take`` batches is plenty);
- ``label_pairs`` agent: routed pairs -> ``pair_labels`` (see ``streams.labelling.labeller``), with
  ``LabellerService`` owning the scoring backend;
- ``ClickIngestService``: the high-rate click path (see ``streams.ingest.consumer`` for why it is an
  aiokafka consumer driven by a Faust service rather than an agent);
- ``ServingService``: the live score index and students for the lookup API, hot-reloaded from
  ``model-updates`` (``streams.serving.watcher``);
- ``TrainingService`` + the leader-only ``training_trigger`` timer: triggered training runs,
  then publish and announce (``streams.retraining.launcher``);
- the storage handle, opened once per worker.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from mode import Service

from streams.core import dead_letters, metrics
from streams.core.config import Settings
from streams.core.dead_letters import DeadLetter
from streams.core.storage import Storage
from streams.ingest.catalogue import Catalogue
from streams.ingest.consumer import ClickIngest
from streams.ops.lag import STATUS_CODES, LagSampler

log = logging.getLogger(__name__)


# (table, time column) whose newest row is its freshness; pair_counts' is its newest batch
FRESHNESS = (("ingest_batches", "created_at"), ("items", "updated_at"), ("pair_tiers", "routed_at"),
             ("pair_labels", "labelled_at"), ("pair_stats", "computed_at"),
             ("pair_scores", "scored_at"), ("training_runs", "updated_at"))


class Runtime:
    """What the app's agents and services share in one worker."""

    def __init__(self, settings: Settings, bootstrap: str, storage: Storage):
        self.settings = settings
        self.bootstrap = bootstrap
        self.storage = storage
        self.catalogue = Catalogue().load(storage)
        self.ingest: ClickIngest | None = None
        self.labeller = None  # streams.labelling.labeller.Labeller, set when the worker starts
        self.pairs_handled = 0  # routed-pair messages the labeller has finished
        from streams.serving.lookup import Serving

        self.serving = Serving(storage, settings)
        self.watcher = None  # streams.serving.watcher.ModelWatcher
        self.launcher = None  # streams.retraining.launcher.TrainingLauncher
        self._lag = None
        self.lag_rows: list[dict] = []  # the newest lag table (status page)
        self._dead_letter_producer: asyncio.Future | None = None
        metrics.initialise(settings.llm_backend)

    def sample_freshness(self) -> None:
        """Newest row time of the tables the re-ranker and the trainer read."""
        st = self.storage
        for table, column in FRESHNESS:
            value = st.query_value(f"SELECT toFloat64(max({column})) FROM {st.table(table)}")
            if value:
                metrics.TABLE_NEWEST.labels(table="pair_counts" if table == "ingest_batches" else table).set(value)

    @property
    def dead_letter_producer(self) -> asyncio.Future:
        """Resolved by the app's DeadLetterService once its producer runs (made on the loop)."""
        if self._dead_letter_producer is None:
            self._dead_letter_producer = asyncio.get_running_loop().create_future()
        return self._dead_letter_producer

    async def send_dead_letters(self, topic: str, letters: list) -> None:
        producer = await asyncio.shield(self.dead_letter_producer)  # a cancelled waiter must not cancel it
        for letter in letters:
            log.warning("dead-lettered %s:%d:%d (%s): %s", letter.source_topic, letter.source_partition,
                        letter.source_offset, letter.reason, letter.detail[:200])
        await dead_letters.send(producer, topic, letters)

    def close_lag(self) -> None:
        if self._lag is not None:
            self._lag.close()
            self._lag = None

    def sample_lag(self) -> None:
        if self._lag is None:
            self._lag = LagSampler(self.bootstrap, self.settings.lag_warn_s)
        groups = [self.settings.app_id, f"{self.settings.app_id}-ingest"]
        self._lag.sample(groups)
        self.lag_rows = self._lag.table(10)
        for row in self.lag_rows:
            labels = (row["group"], row["topic"], str(row["partition"]))
            metrics.CONSUMER_LAG.labels(*labels).set(row["lag"])
            metrics.CONSUMER_LAG_STATUS.labels(*labels).set(STATUS_CODES[row["status"]])
            if row["lag_seconds"] is not None:
                metrics.CONSUMER_LAG_SECONDS.labels(*labels).set(row["lag_seconds"])


def create_app(settings: Settings, bootstrap: str, storage: Storage, web: bool = False) -> faust.App:
    runtime = Runtime(settings, bootstrap, storage)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 3),
        topic_partitions=settings.topic_partitions,
        store="memory://",
        web_enabled=False,  # our own endpoints (streams.serving.http) are served by WebService below
        datadir=f"{settings.data_dir}/faust",
    )
    app.runtime = runtime  # type: ignore[attr-defined]

    items_topic = app.topic(settings.topic_items, key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw")

    @app.agent(items_topic)
    async def catalogue(stream):
        """Catalogue updates: validated, written to ClickHouse, then visible to pairing; an
        empty value (tombstone) deletes the item (``Catalogue.apply``); what cannot be applied
        goes to ``items-dlq`` before the batch is acknowledged."""
        async for events in stream.take_events(1000, within=0.2):
            metrics.EVENTS_IN.labels(stage="items").inc(len(events))
            applied = await runtime.catalogue.apply_async(storage, [(e.key, e.value) for e in events],
                                                          settings.max_event_bytes)
            if applied.rejected:
                await runtime.send_dead_letters(settings.topic_items_dlq, [
                    DeadLetter(events[k].key, events[k].value, reason, detail, events[k].message.topic,
                               events[k].message.partition, events[k].message.offset)
                    for k, reason, detail in applied.rejected])

    pairs_topic = app.topic(settings.topic_pairs_to_score, key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw")

    @app.agent(pairs_topic)
    async def label_pairs(stream):
        """Routed pairs -> pair_labels (default / cached / LLM / few-shot LLM) or the DLQ.

        Batches of up to 200 pairs are scored concurrently (the backend guard bounds the
        calls in flight); the offsets are acknowledged after the labels are written."""
        while runtime.labeller is None:
            await asyncio.sleep(0.05)
        async for events in stream.take_events(200, within=0.5):
            metrics.EVENTS_IN.labels(stage="labelling").inc(len(events))
            report = await runtime.labeller.handle(
                [(e.key, e.value, e.message.partition, e.message.offset) for e in events])
            runtime.pairs_handled += len(events)
            log.info("labelled %s, cached %d, dead %s in %.2fs",
                     report.labelled, report.cached, report.dead, report.seconds)

    @app.service
    class DeadLetterService(Service):
        """The producer of every dead-letter topic the worker's agents and services write
        (``items``, ``model-updates``, ``pairs-to-score``); the click ingest has its own
        producer, which also routes pairs."""

        async def on_start(self) -> None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
            await producer.start()
            runtime.dead_letter_producer.set_result(producer)

        async def on_stop(self) -> None:
            if runtime.dead_letter_producer.done():
                await runtime.dead_letter_producer.result().stop()

    @app.service
    class LabellerService(Service):
        """Owns the scoring backend; dead letters go through the DeadLetterService's producer."""

        async def on_start(self) -> None:
            from streams.labelling.labeller import Labeller, build_scorer

            producer = await asyncio.shield(runtime.dead_letter_producer)
            runtime.labeller = Labeller(settings, storage, build_scorer(settings), producer)

        async def on_stop(self) -> None:
            if runtime.labeller is not None:
                await runtime.labeller.scorer.backend.close()

    @app.service
    class ClickIngestService(Service):
        """Runs the click ingest for the worker's lifetime."""

        async def on_start(self) -> None:
            runtime.ingest = ClickIngest(settings, bootstrap, storage, runtime.catalogue)
            await runtime.ingest.start()

        @Service.task
        async def _consume(self) -> None:
            while runtime.ingest is None:
                await self.sleep(0.05)
            await runtime.ingest.run()

        async def on_stop(self) -> None:
            if runtime.ingest is not None:
                await runtime.ingest.stop()

    @app.service
    class ServingService(Service):
        """Loads the live score version and students, then follows ``model-updates``."""

        async def on_start(self) -> None:
            from streams.serving.watcher import ModelWatcher

            await runtime.serving.reload()

            async def dead_letter(message, reason: str, detail: str) -> None:
                await runtime.send_dead_letters(settings.topic_model_updates_dlq, [DeadLetter(
                    message.key, message.value, reason, detail, message.topic, message.partition,
                    message.offset)])

            runtime.watcher = ModelWatcher(bootstrap, settings.topic_model_updates, runtime.serving,
                                           dead_letter)
            await runtime.watcher.start()

        @Service.task
        async def _watch(self) -> None:
            while runtime.watcher is None:
                await self.sleep(0.05)
            await runtime.watcher.run()

        async def on_stop(self) -> None:
            if runtime.watcher is not None:
                await runtime.watcher.stop()

    @app.service
    class TrainingService(Service):
        """Owns the launcher of training runs and its producer (jobs, outputs, announcements)."""

        async def on_start(self) -> None:
            from aiokafka import AIOKafkaProducer

            from streams.retraining.launcher import TrainingLauncher

            self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                             max_batch_size=1 << 20)
            await self.producer.start()
            runtime.launcher = TrainingLauncher(settings, storage, self.producer)

        async def on_stop(self) -> None:
            if runtime.launcher is not None:
                await runtime.launcher.stop()
            await self.producer.stop()

    @app.timer(interval=settings.training_check_s, on_leader=True)
    async def training_trigger():
        """Enough new labels, or the schedule: start a training run (leader worker only)."""
        if runtime.launcher is not None:
            await runtime.launcher.check()

    if web:
        @app.service
        class WebService(Service):
            """``/metrics``, ``/healthz``, ``/readyz`` and the lookup API on ``PAIRSTREAM_WEB_PORT``."""

            async def on_start(self) -> None:
                from streams.ops.status_page import add_status_route
                from streams.serving.http import assignment_check, broker_check, build_app, serve, storage_check
                from streams.serving.lookup import add_routes

                checks = {"clickhouse": storage_check(storage), "kafka": broker_check(bootstrap),
                          "partitions": assignment_check(runtime)}
                web_app = build_app(checks, client_max_size=settings.lookup_max_body_bytes)
                add_routes(web_app, runtime.serving, settings)
                add_status_route(web_app, runtime)
                self.runner = await serve(web_app, settings.web_port, settings.web_host,
                                         settings.web_max_connections, settings.web_header_timeout_s,
                                         settings.web_keepalive_s)
                log.info("web endpoints on :%d", settings.web_port)

            async def on_stop(self) -> None:
                await self.runner.cleanup()

    @app.service
    class LagExportService(Service):
        """Closes the lag sampler's admin connection with the worker."""

        async def on_stop(self) -> None:
            await asyncio.to_thread(runtime.close_lag)

    @app.timer(interval=settings.lag_sample_s)
    async def export_lag():
        """Consumer lag of the worker's groups and table freshness as Prometheus gauges."""
        await asyncio.to_thread(runtime.sample_lag)
        await asyncio.to_thread(runtime.sample_freshness)

    return app
