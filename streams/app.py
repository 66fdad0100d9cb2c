"""The Faust app: wiring only. Each part of the worker is a plain asyncio object from its stage
package, hosted by one adapter (``Hosted``) that starts it with the worker, runs it for the
worker's lifetime and stops it with the worker:

- ``catalogue`` agent: the compacted ``items`` topic -> ClickHouse ``items`` and its dead letters
  (low rate: a Faust agent with ``take`` batches is plenty); the in-memory catalogue that pairing
  reads follows every ``items`` partition in each worker (``streams.ingest.catalogue_follower``);
- ``label_pairs`` agent: routed pairs -> ``pair_labels`` (``streams.labelling.labeller``);
- dead letters: the producer of every DLQ the agents and services write;
- click ingest: the high-rate click path (``streams.ingest.consumer`` says why it is an aiokafka
  consumer hosted here rather than an agent);
- serving: the live score index and students for the lookup API, hot-reloaded from
  ``model-updates`` (``streams.serving.watcher``);
- training: the launcher of triggered runs and the leader-only ``training_trigger`` timer
  (``streams.retraining.launcher``);
- continuous publishing: the leader-only ``score-refresh`` loop scores again the pairs whose
  behaviour changed since the live version was written (``streams.publishing.refresh``);
- web: ``/metrics``, ``/healthz``, ``/readyz``, ``/status`` and the lookup API;
- on-call sampling: consumer lag and table freshness on a timer (``streams.ops.sampling``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faust
from mode import Service

from streams.core import dead_letters, metrics
from streams.core.config import Settings
from streams.core.dead_letters import DeadLetter
from streams.core.storage import Storage
from streams.ingest.catalogue import Catalogue
from streams.ingest.consumer import ClickIngest
from streams.ops.sampling import LagExport, sample_on_call

if TYPE_CHECKING:
    from streams.labelling.labeller import Labeller
    from streams.publishing.refresh import RefreshLoop
    from streams.retraining.launcher import TrainingLauncher
    from streams.serving.export import ExportWriter
    from streams.serving.lookup_process import LookupSupervisor
    from streams.serving.watcher import ModelWatcher

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]


class Hosted(Service):
    """One part of the worker under Faust's lifecycle: ``start`` when the worker starts, then
    ``run`` (if any) as a task for the worker's lifetime, ``stop`` when the worker stops. Mode
    starts a service's futures only after ``on_start``, so ``run`` never sees an unstarted part."""

    def __init__(self, name: str, start: Step | None = None, run: Step | None = None,
                 stop: Step | None = None):
        super().__init__()
        self.part_name = name
        self._start, self._run, self._stop = start, run, stop

    @property
    def label(self) -> str:
        return f"Hosted({self.part_name})"

    async def on_start(self) -> None:
        if self._start is not None:
            await self._start()

    async def on_started(self) -> None:
        if self._run is not None:
            self.add_future(self._run())

    async def on_stop(self) -> None:
        if self._stop is not None:
            await self._stop()


@dataclass(frozen=True)
class StreamProgress:
    """How far the stream has got, as the demo's live view shows it."""

    events: int
    invalid: int
    pair_rows: int
    lag: int
    routed: int
    labelled: int


class WorkerContext:
    """What the app's agents and parts share in one worker. Other packages get narrow views of
    it (``click_partitions``, ``served_versions``, ``lag_rows``, ``progress``), never the object."""

    def __init__(self, settings: Settings, bootstrap: str, storage: Storage):
        from streams.serving.lookup import Serving

        self.settings = settings
        self.bootstrap = bootstrap
        self.storage = storage
        self.catalogue = Catalogue().load(storage)
        self.serving = Serving(storage, settings)
        self.ingest: ClickIngest | None = None
        self.labeller: Labeller | None = None  # once its part has started
        self.watcher: ModelWatcher | None = None
        self.launcher: TrainingLauncher | None = None
        self.refresher: RefreshLoop | None = None
        self.exports: ExportWriter | None = None  # with lookup processes: the snapshots they map
        self.publish_lock = asyncio.Lock()  # one writer of score versions at a time: publish or refresh
        self.pairs_handled = 0  # routed-pair messages the labeller has finished
        self.lag = LagExport(bootstrap, [settings.app_id, f"{settings.app_id}-ingest"], settings.lag_warn_s)
        self._dead_letter_producer: asyncio.Future | None = None
        self.labeller_ready = asyncio.Event()  # set once the labeller's part has started
        metrics.initialise(settings.llm_backend)

    def lag_rows(self) -> list[dict]:
        """The newest lag table (the status page's)."""
        return self.lag.rows

    def click_partitions(self) -> tuple[list[int], dict[int, str]]:
        """The click partitions this worker holds, and those an offset reset paused (readiness)."""
        return self.ingest.held() if self.ingest is not None else ([], {})

    def served_versions(self) -> tuple[str | None, str | None, int]:
        """(score version, model version, published pairs) the lookup API serves now."""
        snap = self.serving.current
        return snap.index.score_version, snap.model_version, len(snap.index)

    def progress(self) -> StreamProgress:
        ingest = self.ingest
        totals = ingest.totals if ingest is not None else {}
        return StreamProgress(totals.get("events", 0), totals.get("invalid", 0), totals.get("pairs", 0),
                              ingest.lag() if ingest is not None else 0,
                              ingest.router.routed_total if ingest is not None else 0, self.pairs_handled)

    @property
    def dead_letter_producer(self) -> asyncio.Future:
        """Resolved once the dead-letter part's producer runs (it is made on the loop)."""
        if self._dead_letter_producer is None:
            self._dead_letter_producer = asyncio.get_running_loop().create_future()
        return self._dead_letter_producer

    async def send_dead_letters(self, topic: str, letters: list[DeadLetter]) -> None:
        producer = await asyncio.shield(self.dead_letter_producer)  # a cancelled waiter must not cancel it
        for letter in letters:
            log.warning("dead-lettered %s:%d:%d (%s): %s", letter.source_topic, letter.source_partition,
                        letter.source_offset, letter.reason, letter.detail[:200])
        await dead_letters.send(producer, topic, letters)


class WorkerApp(faust.App):
    """The Faust app with the parts' shared state on it (the demo reads it)."""

    context: WorkerContext


def create_app(settings: Settings, bootstrap: str, storage: Storage, web: bool = False) -> WorkerApp:
    context = WorkerContext(settings, bootstrap, storage)
    app = WorkerApp(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 3),
        topic_partitions=settings.topic_partitions,
        store="memory://",
        web_enabled=False,  # our own endpoints (streams.serving.http) are served by the web part
        datadir=f"{settings.data_dir}/faust",
    )
    app.context = context
    _agents(app, context)
    for part in _parts(context, web):
        app.service(part)  # type: ignore[arg-type]  # Faust hosts instances as well as classes

    @app.timer(interval=settings.training_check_s, on_leader=True)
    async def training_trigger():
        """Enough new labels, or the schedule: start a training run (leader worker only)."""
        if context.launcher is not None:
            await context.launcher.tick()

    if settings.publish_refresh_s > 0:
        async def refresh_scores() -> None:
            """Pairs whose behaviour changed: scored again into the live version, on the leader
            only, every ``publish_refresh_s`` or back to back when one refresh takes longer (a
            loop, not a Faust timer: a timer that overruns its interval is logged as a warning
            every time, and under load a refresh of every changed pair does)."""
            while True:
                started = asyncio.get_running_loop().time()
                if context.refresher is not None and app.is_leader():
                    await context.refresher.tick()
                spent = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(settings.publish_refresh_s - spent, 0.5))

        app.service(Hosted("score-refresh", run=refresh_scores))  # type: ignore[arg-type]

    @app.timer(interval=settings.lag_sample_s)
    async def export_lag():
        """Consumer lag of the worker's groups and table freshness as Prometheus gauges."""
        await sample_on_call(context.lag, storage)

    return app


def _raw_topic(app: faust.App, name: str):
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def _agents(app: faust.App, context: WorkerContext) -> None:
    settings, storage = context.settings, context.storage

    @app.agent(_raw_topic(app, settings.topic_items))
    async def catalogue(stream):
        """Catalogue updates: validated, written to ClickHouse, then visible to pairing; an
        empty value (tombstone) deletes the item (``Catalogue.apply``); what cannot be applied
        goes to ``items-dlq`` before the batch is acknowledged."""
        async for events in stream.take_events(1000, within=0.2):
            metrics.EVENTS_IN.labels(stage="items").inc(len(events))
            applied = await context.catalogue.apply_async(storage, [(e.key, e.value) for e in events],
                                                          settings.max_event_bytes, remember=False)
            if applied.rejected:
                await context.send_dead_letters(settings.topic_items_dlq, [
                    DeadLetter(events[k].key, events[k].value, reason, detail, events[k].message.topic,
                               events[k].message.partition, events[k].message.offset)
                    for k, reason, detail in applied.rejected])

    @app.agent(_raw_topic(app, settings.topic_pairs_to_score))
    async def label_pairs(stream):
        """Routed pairs -> pair_labels (default / cached / LLM / few-shot LLM) or the DLQ.

        Batches of up to 200 pairs are scored concurrently (the backend guard bounds the
        calls in flight); the offsets are acknowledged after the labels are written."""
        await context.labeller_ready.wait()
        labeller = context.labeller
        assert labeller is not None  # labeller_ready is set after it is made
        async for events in stream.take_events(200, within=0.5):
            metrics.EVENTS_IN.labels(stage="labelling").inc(len(events))
            report = await labeller.handle(
                [(e.key, e.value, e.message.partition, e.message.offset) for e in events])
            context.pairs_handled += len(events)
            log.debug("labelled %s, cached %d, dead %s in %.2fs",
                      report.labelled, report.cached, report.dead, report.seconds)


def _parts(context: WorkerContext, web: bool) -> list[Hosted]:
    """The worker's parts, each a start / run / stop over an object of its stage package."""
    settings, storage, bootstrap = context.settings, context.storage, context.bootstrap
    exporting = web and bool(settings.lookup_port)  # snapshots written for the lookup processes

    async def start_dead_letters() -> None:
        """The producer of every DLQ the agents and parts write (``items``, ``model-updates``,
        ``pairs-to-score``); the click ingest has its own, which also routes pairs."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        context.dead_letter_producer.set_result(producer)

    async def stop_dead_letters() -> None:
        if context.dead_letter_producer.done():
            await context.dead_letter_producer.result().stop()

    async def start_labeller() -> None:
        from streams.labelling.labeller import Labeller, build_scorer

        producer = await asyncio.shield(context.dead_letter_producer)
        context.labeller = Labeller(settings, storage, build_scorer(settings), producer)
        context.labeller_ready.set()

    async def stop_labeller() -> None:
        if context.labeller is not None:
            await context.labeller.scorer.backend.close()

    async def start_ingest() -> None:
        context.ingest = ClickIngest(settings, bootstrap, storage, context.catalogue, follow_items=True)
        await context.ingest.start()

    async def run_ingest() -> None:
        if context.ingest is not None:  # made by start_ingest, which Mode runs first
            await context.ingest.run()

    async def run_watcher() -> None:
        if context.watcher is not None:
            await context.watcher.run()

    async def stop_ingest() -> None:
        if context.ingest is not None:
            await context.ingest.stop()

    async def start_serving() -> None:
        from streams.serving.watcher import ModelWatcher

        if exporting:  # every snapshot swapped in, written for the lookup processes
            from streams.serving.export import ExportWriter, export_root

            context.exports = ExportWriter(export_root(settings.data_dir))
            context.serving.listeners.append(context.exports.offer)
            context.exports.start()
        await context.serving.reload()

        async def dead_letter(message, reason: str, detail: str) -> None:
            await context.send_dead_letters(settings.topic_model_updates_dlq, [DeadLetter(
                message.key, message.value, reason, detail, message.topic, message.partition,
                message.offset)])

        watcher = context.watcher = ModelWatcher(bootstrap, settings.topic_model_updates, context.serving,
                                                 dead_letter)
        await watcher.start()

    async def stop_serving() -> None:
        if context.watcher is not None:
            await context.watcher.stop()
        if context.exports is not None:
            await context.exports.stop()

    async def start_training() -> None:
        """The launcher of training runs, the refresher of published scores, and their producer
        (jobs, outputs, announcements)."""
        from aiokafka import AIOKafkaProducer

        from streams.publishing.refresh import RefreshLoop
        from streams.retraining.launcher import TrainingLauncher

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
        await producer.start()
        context.launcher = TrainingLauncher(settings, storage, producer, publish_lock=context.publish_lock)
        context.refresher = RefreshLoop(settings, storage, producer, context.serving, context.publish_lock)

    async def stop_training() -> None:
        if context.refresher is not None:
            await context.refresher.stop()
        if context.launcher is not None:
            await context.launcher.stop()
            await context.launcher.producer.stop()

    async def stop_sampling() -> None:
        await asyncio.to_thread(context.lag.close)  # the lag sampler's admin connection

    parts = [
        Hosted("dead-letters", start_dead_letters, stop=stop_dead_letters),
        Hosted("labeller", start_labeller, stop=stop_labeller),
        Hosted("click-ingest", start_ingest, run=run_ingest, stop=stop_ingest),
        Hosted("serving", start_serving, run=run_watcher, stop=stop_serving),
        Hosted("training", start_training, stop=stop_training),
    ]
    if web:
        parts.append(_web_part(context))
    parts.append(Hosted("on-call-sampling", stop=stop_sampling))
    return parts


def _web_part(context: WorkerContext) -> Hosted:
    """``/metrics``, ``/healthz``, ``/readyz``, ``/status`` and the lookup API on ``PAIRSTREAM_WEB_PORT``;
    then the lookup processes on ``PAIRSTREAM_LOOKUP_PORT``."""
    settings, storage, bootstrap = context.settings, context.storage, context.bootstrap
    runner = None
    supervisor: LookupSupervisor | None = None

    async def start() -> None:
        nonlocal runner, supervisor
        from streams.ops.status_page import add_status_route
        from streams.serving.http import assignment_check, broker_check, build_app, serve_with_settings, storage_check
        from streams.serving.routes import add_item_rows_route, add_routes

        checks = {"clickhouse": storage_check(storage), "kafka": broker_check(bootstrap),
                  "partitions": assignment_check(context.click_partitions)}
        web_app = build_app(checks, client_max_size=settings.lookup_max_body_bytes,
                            api_token=settings.api_token)
        add_routes(web_app, context.serving, settings)
        add_item_rows_route(web_app, storage)
        add_status_route(web_app, storage, context.served_versions, context.lag_rows)
        runner = await serve_with_settings(web_app, settings)
        log.info("web endpoints on :%d", settings.web_port)
        if settings.lookup_port:  # the lookup API apart from the worker's work
            from streams.serving.lookup_process import LookupSupervisor

            supervisor = LookupSupervisor(settings)
            await asyncio.to_thread(supervisor.start)
            if settings.worker_nice:  # the lookups first, on cores the worker shares with them
                from streams.core.lifeline import lower_own_priority

                lower_own_priority(settings.worker_nice, keep=frozenset({supervisor.thread_id or 0}))
            log.info("%d lookup process(es) on :%d; the worker now runs %d nicer", supervisor.running(),
                     settings.lookup_port, settings.worker_nice)

    async def stop() -> None:
        if supervisor is not None:
            await asyncio.to_thread(supervisor.stop)
        if runner is not None:
            await runner.cleanup()

    return Hosted("web", start, stop=stop)
