"""The click ingest: Kafka -> sessions -> pair increments -> ClickHouse, exactly once.

Why not a Faust agent: Faust's per-message dispatch caps near 10k events/s on this machine,
while an aiokafka ``getmany`` loop consumes ~178k/s. So the high-rate click stream runs on an
aiokafka consumer (its own consumer group) driven by a Faust service inside the worker; Faust
keeps the app, the catalogue agent, the web server and the low-rate streams.

Exactly-once counts. Every write covers, per partition, one contiguous batch ``[start, end)``
of paired messages (several fetches when they piled up during the previous write) and writes,
in this order:

1. an *intent* row (topic, partition, start, end) in ``ingest_batches``;
2. the batch's aggregated pair increments into ``pair_counts`` with the insert
   deduplication token ``topic:partition:start:end`` (ClickHouse drops a repeat);
3. the Kafka offset commit ``end`` (for lag monitoring; recovery does not rely on it).

Every ``checkpoint_interval_s`` (and before a rebalance or a stop) a *checkpoint* follows,
in its own lane: it waits for the count writes sealed before it (so the crossing check sees
them) and for the previous checkpoint, but count writes sealed after it do not wait for it:

4. tier routing for the pairs touched since the last checkpoint (at-least-once: the ledger
   ``pair_tiers`` is written after the messages are produced);
5. the histories of the users touched since the last checkpoint into ``user_sessions`` with
   ``version = end`` (one insert, so one part: all of a checkpoint lands or none of it).

Offset commits (3) run in a third lane, in order, since recovery does not read them. The
lanes keep recovery unchanged: a checkpoint lands only after every batch below its version,
and the batches above it are intents that a restore rebuilds whether or not they landed.

On assignment a partition restores its sessions at their newest version ``v`` and seeks to
``v``. The intents ``[v, e1), [e1, e2), ...`` recorded since then are rebuilt exactly, one
batch each: the same state and the same messages give the same increments and the same token,
so writes that had landed before a crash are dropped and ones that had not land now, and the
pairs those batches touched are routed again. Nothing lost, nothing doubled, whichever step a
SIGKILL interrupts. Checkpointing every couple of seconds rather than every batch is what keeps
the per-batch cost to two small inserts (see docs/ingest.md, "How the ingest is exact and fast").

Invalid clicks go to the dead-letter topic (original bytes as value; reason, detail, source
partition and offset as headers) before the offset that covers them is committed.

This module is the lifecycle and the consume loop. The steps live apart: ``batches`` (pairing
and sealing, no broker), ``writes`` (the three lanes), ``recovery`` (restore, offset resets).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

from streams.core import metrics
from streams.core.config import Settings
from streams.core.storage import Storage, StorageError
from streams.ingest import kafka_reader
from streams.ingest import kernel as pair_kernel
from streams.ingest.batches import FETCH_MAX_RECORDS, BatchAssembler, BatchReport, PartitionState
from streams.ingest.catalogue import Catalogue
from streams.ingest.catalogue_follower import POLL_MS, CatalogueFollower
from streams.ingest.fencing import OwnerFence, PartitionsFenced
from streams.ingest.membership import membership_lost, request_rejoin
from streams.ingest.recovery import PartitionRecovery
from streams.ingest.sessions import Sessionizer, Visits
from streams.ingest.tiers import TierRouter
from streams.ingest.writes import WriteLanes, await_lane

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

log = logging.getLogger(__name__)

OPEN_POLL_MS = 10  # fetch wait while paired events wait for the write in flight


class ClickIngest(PartitionRecovery, WriteLanes):
    """One consumer-group member of the click ingest (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        storage: Storage,
        catalogue: dict[str, str],
        group_id: str | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
        clock: Callable[[], float] = time.time,
        router: TierRouter | None = None,
        follow_items: bool = False,
    ):
        self.settings = settings
        self.bootstrap = bootstrap
        self.storage = storage
        self.catalogue = catalogue
        self.topic = settings.topic_clicks
        self.group_id = group_id or f"{settings.app_id}-ingest"
        self.on_batch = on_batch
        self.clock = clock
        self.partitions: dict[int, PartitionState] = {}
        self.resets: dict[int, str] = {}  # paused partitions whose checkpoint is outside the log
        self._restoring: dict[int, list] = {}  # partition -> records fetched while it restores
        self._held_paused: set[int] = set()  # restoring partitions paused for holding enough
        self._cover_waiters: dict[int, tuple] = {}  # partition -> (checkpoint, future): see _outside_log
        self.router = router or TierRouter(settings, storage)
        self.fence = OwnerFence(storage, self.topic)  # claims: ``streams.ingest.fencing``
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._write_task: asyncio.Future | None = None  # count writes, one at a time
        self._checkpoint_task: asyncio.Future | None = None  # routing and sessions, in order
        self._commit_task: asyncio.Future | None = None  # offset commits, in order
        self._flush_lock = asyncio.Lock()
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="ingest-tables")
        self.totals: defaultdict[str, int] = defaultdict(int)
        self.batches = BatchAssembler(settings, self.topic)
        # the catalogue follows the whole items topic, and clicks wait for it (a worker's
        # ingest; tests and benchmarks that load the catalogue themselves go without)
        self.follower: CatalogueFollower | None = None
        if follow_items:
            if not isinstance(catalogue, Catalogue):
                raise TypeError("following the items topic needs a streams.ingest.catalogue.Catalogue")
            self.follower = CatalogueFollower(bootstrap, settings.topic_items, catalogue,
                                              settings.max_event_bytes, settings.catalogue_wait_s,
                                              fetch_wait_ms=settings.fetch_wait_ms(POLL_MS // 2))
        self._follow_task: asyncio.Future | None = None
        self.first_message_at: float | None = None  # perf_counter of the first consumed batch

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The started group consumer (``start`` makes it)."""
        if self._consumer is None:
            raise RuntimeError("ClickIngest.start() has not run")
        return self._consumer

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer of dead letters and routed pairs."""
        if self._producer is None:
            raise RuntimeError("ClickIngest.start() has not run")
        return self._producer

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.abc import ConsumerRebalanceListener

        # what the process holds when the ingest starts (imported modules, the catalogue) lives
        # as long as it does: out of the cyclic GC's sight, whose full collections over it
        # (0.1-0.3 s each) otherwise stall the stream a few times per 400k events
        gc.freeze()
        ingest = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                await ingest._hand_over(revoked)

            async def on_partitions_assigned(self, assigned):
                # together: one query per table, and each partition's broker offset
                # requests (queued behind fetches) at the same time
                await ingest._restore_partitions(assigned)

        await asyncio.to_thread(_warm_up)
        try:
            await asyncio.to_thread(self.storage.warm_up)
        except StorageError as exc:  # an outage shows in the first write, which retries
            log.warning("storage warm-up failed: %s", exc)
        timeout_ms = int(self.settings.session_timeout_s * 1000)
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=timeout_ms,
            heartbeat_interval_ms=max(500, timeout_ms // 3),
            rebalance_timeout_ms=timeout_ms,
            max_poll_interval_ms=600_000,  # a ClickHouse outage must not evict us
            **kafka_reader.consumer_options(self.settings.fetch_wait_ms(kafka_reader.FETCH_MAX_WAIT_MS)),
        )
        producer = self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, max_batch_size=1 << 20)
        await producer.start()
        await consumer.start()
        kafka_reader.tune(consumer)
        consumer.subscribe([self.topic], listener=Listener())
        if self.follower is not None:
            await self.follower.start()
            self._follow_task = asyncio.ensure_future(self.follower.run())

    async def stop(self) -> None:
        try:
            if self._consumer is not None and self.partitions:
                await self.checkpoint()
            await self.drain()
        except PartitionsFenced as exc:  # another member owns them now: nothing of ours landed
            self._fenced(exc)
        finally:
            self._stopping.set()
        await self._close()

    # --- giving partitions up ---------------------------------------------------------

    async def _hand_over(self, revoked) -> None:
        """A revoke: in an orderly rebalance, write what is open and checkpoint, within a
        bound (``revoke_budget_s``) so a ClickHouse outage cannot hold the rebalance past its
        timeout; after a lost membership, drop everything without writing (aiokafka calls
        this revoke too, and the partitions may already be another member's)."""
        if self._consumer is not None and membership_lost(self._consumer):
            if self.partitions:  # a first join has no generation either, and nothing to drop
                log.warning("group membership lost (the coordinator dropped this member): dropping "
                            "partitions %s without writing", sorted(self.partitions))
            self._forget_partitions("membership_lost")
            return

        async def flush_and_drain():
            async with self._flush_lock:  # let an in-progress flush finish
                await self._flush({}, force_checkpoint=True)
                await self.drain()

        try:
            await asyncio.wait_for(flush_and_drain(), self.revoke_budget_s())
        except asyncio.TimeoutError:
            log.error("revoke could not write within %.1f s (ClickHouse slow or down): dropping "
                      "partitions %s without writing; the next owner replays them",
                      self.revoke_budget_s(), sorted(self.partitions))
            self._forget_partitions("revoke_timeout")
            return
        except PartitionsFenced as exc:
            self._fenced(exc)
            return
        for tp in revoked:
            self.partitions.pop(tp.partition, None)
            self._restoring.pop(tp.partition, None)
            self._held_paused.discard(tp.partition)
            self.resets.pop(tp.partition, None)
        self.fence.release([tp.partition for tp in revoked])

    def revoke_budget_s(self) -> float:
        """How long a revoke may write: half the rebalance timeout (the consumer's session
        timeout here), so the member re-joins in time and keeps its place in the group."""
        return max(0.5, self.settings.session_timeout_s / 2)

    def _fenced(self, exc: PartitionsFenced) -> None:
        """Another member claimed partitions we wrote to: said loudly, everything dropped (what
        was refused never landed; ClickHouse holds all that did) and the group re-joined."""
        metrics.FENCED_WRITES.inc(len(exc.partitions))
        log.error("%s; dropping every partition without writing and re-joining the group", exc)
        self._forget_partitions("fenced")
        if self._consumer is not None:
            request_rejoin(self._consumer)

    def _forget_partitions(self, reason: str) -> None:
        """Drop every partition's in-memory state and every write not yet made, as a crashed
        member would: a write already in a thread may still run, but under claims that the
        next owner's claim supersedes, so it changes nothing then."""
        metrics.INGEST_PARTITIONS_DROPPED.labels(reason=reason).inc(len(self.partitions))
        self._cancel_lanes()
        self.partitions.clear()
        self._restoring.clear()
        self._held_paused.clear()
        self.resets.clear()
        self.batches = BatchAssembler(self.settings, self.topic)
        self.fence.release()

    def _cancel_lanes(self) -> None:
        """Cancel every lane step not yet done (a step already in a thread still finishes, as it
        could in a crash) and retrieve their outcomes, which nobody waits for any more."""
        for task in self._lanes():
            task.cancel()
            task.add_done_callback(_consume_outcome)
        self._write_task = self._checkpoint_task = self._commit_task = None

    async def abort(self) -> None:
        """Close the connections and write nothing more: what a killed process leaves behind."""
        self._stopping.set()
        self._cancel_lanes()
        await self._close()

    async def _close(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        if self._follow_task is not None:
            self._follow_task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._builder.shutdown(wait=False, cancel_futures=True)

    def lag(self) -> int:
        """Messages fetched by the broker's high watermark but not yet processed, summed over
        the held partitions (a live figure for the demo's view; monitoring uses committed
        offsets, ``streams.ops.lag``)."""
        if self._consumer is None:
            return 0
        highs = ((self.consumer.highwater(tp), state.position) for tp, state in self._tps())
        return sum(max(0, high - position) for high, position in highs if high is not None)

    def held(self) -> tuple[list[int], dict[int, str]]:
        """The partitions this member holds, and those paused by an offset reset with why."""
        return sorted(self.partitions), dict(self.resets)

    def caught_up(self, end_offsets: dict[int, int]) -> bool:
        """True once every partition in ``end_offsets`` is processed and written up to its end."""
        return not self._busy() and not self.batches.open and all(
            p in self.partitions and self.partitions[p].position >= end and not self.partitions[p].pending
            for p, end in end_offsets.items())

    async def poll_once(self, timeout_ms: int = 50) -> None:
        """One fetch and flush outside ``run`` (a benchmark's warm-up while the group joins)."""
        await self.flush(await self.consumer.getmany(timeout_ms=timeout_ms))

    async def run(self, until: Callable[[], bool] | None = None) -> None:
        """Consume until ``stop()`` (or ``until()`` turns true)."""
        flush_s = self.settings.ingest_flush_ms / 1000.0
        max_events = self.settings.ingest_batch_events
        while not self._stopping.is_set():
            if until is not None and until():
                break
            try:
                if self._failed():
                    await self.drain()  # surface a failed write at once
            except PartitionsFenced as exc:
                self._fenced(exc)
                continue
            # paired events wait for the write in flight: look again soon, so they are sealed
            # into the next write as soon as it returns, not when the fetch times out
            wait_ms = OPEN_POLL_MS if self.batches.open else int(flush_s * 1000)
            try:
                batches = await self.consumer.getmany(
                    timeout_ms=wait_ms, max_records=min(max_events, FETCH_MAX_RECORDS))
            except Exception as exc:  # noqa: BLE001 - consumer errors during shutdown
                if self._stopping.is_set():
                    break
                log.warning("getmany failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if batches and self.first_message_at is None:
                self.first_message_at = time.perf_counter()
            try:
                await self.flush(batches)  # also seals what is open once the writer is free
            except PartitionsFenced as exc:  # surfaced by back-pressure's wait on the count lane
                self._fenced(exc)
            # getmany returns without suspending while the fetcher has records buffered, so
            # yield after each fetch: otherwise a sealed write (and every hop of the one in
            # flight) waits until the consumer runs dry, and so does the socket read of the
            # next fetch response (256 KB a turn; see kafka_reader)
            await kafka_reader.let_reads_run()

    # --- the batch ---------------------------------------------------------------------

    def _tps(self):
        from aiokafka.structs import TopicPartition

        return [(TopicPartition(self.topic, p), st) for p, st in self.partitions.items()]

    async def flush(self, batches: dict) -> None:
        """Process a fetch now; write what is open as soon as the writer is free.

        Pipelining with adaptive batches: ClickHouse calls run in a thread (chDB and the HTTP
        client release the GIL) and one write is in flight at a time. While it runs, newly
        paired fetches join each partition's *open* batch; when it returns, everything open
        is sealed into the next write. So under load batches grow (fewer, larger inserts,
        each with a fixed cost) and at a low rate they stay small (fresh). Past
        ``ingest_batch_events`` open events the ingest waits for the write (back-pressure).
        A sealed batch is still one contiguous offset range per partition with its own
        intent and token, and a checkpoint is taken at sealing, so recovery is unchanged.
        """
        async with self._flush_lock:
            await self._flush(batches)

    async def checkpoint(self) -> None:
        """Checkpoint now (before a stop or a rebalance, or when a test wants one)."""
        async with self._flush_lock:
            await self._flush({}, force_checkpoint=True)

    async def _flush(self, batches: dict, force_checkpoint: bool = False) -> None:
        now = self.clock()
        if self.follower is not None and batches:  # the items created before these clicks first
            await self.follower.wait_for(max((records[-1].timestamp or 0 for records in batches.values()
                                              if records), default=0), now)
        for tp in set(batches) | {tp for tp, st in self._tps() if st.pending}:
            state = self.partitions.get(tp.partition)
            if state is None:
                if tp.partition in self._restoring:
                    self._hold_while_restoring(tp, batches.get(tp, ()))
                continue  # or revoked meanwhile
            messages, exact = self.batches.take_messages(tp.partition, state, batches.get(tp, ()))
            if messages:
                self.batches.pair(tp, state, messages, exact, now)
        if self._writing():
            if not force_checkpoint and self.batches.events < self.settings.ingest_batch_events:
                return
            # back-pressure (or a forced checkpoint, which must follow this write): the count
            # lane only, a checkpoint in flight holds up neither
            task, self._write_task = self._write_task, None
            if task is not None:
                await await_lane(task)
        self._seal_if_needed(now, force_checkpoint)

    def _seal_if_needed(self, now: float, force_checkpoint: bool = False) -> None:
        # a checkpoint that comes due while the previous one is still being written waits for
        # the next seal after it (one checkpoint covers both), unless one is needed now
        checkpoint_busy = self._checkpoint_task is not None and not self._checkpoint_task.done()
        due = force_checkpoint or self.batches.checkpoint_due(checkpoint_busy)
        if self.batches.open or (due and self.batches.checkpoint_needed(self.partitions)):
            self._seal(due, now)

    def _on_write_done(self, task: asyncio.Future) -> None:
        """Seal what is open as soon as a count write returns, not when the consume loop's
        next fetch and pairing are done (~0.1 s a write under load, the writer idle).

        Safe without the flush lock: this runs on the event loop between steps, so no
        pairing is half done, and it stands back while a flush holds the lock."""
        if task.cancelled() or task.exception() is not None or self._stopping.is_set():
            return  # a failure surfaces in the run loop
        if task is not self._write_task or self._flush_lock.locked() or not self.batches.open:
            return
        self._seal_if_needed(self.clock())

    def _seal(self, due: bool, now: float) -> None:
        """Hand the open batches (and a checkpoint when due) to the lanes."""
        sealed = self.batches.seal(self.partitions, due)
        claims = self.fence.current()  # the writes carry the claims they were sealed under
        if sealed.tables or sealed.dlq:
            self._write_task = asyncio.ensure_future(self._write_after(
                self._write_task, sealed.tables, sealed.dlq, now, sealed.events, sealed.event_times, claims))
            self._write_task.add_done_callback(self._on_write_done)
        if sealed.checkpoint is not None:
            self._checkpoint_task = asyncio.ensure_future(self._checkpoint_after(
                self._checkpoint_task, self._write_task, sealed.checkpoint, claims))


def _consume_outcome(task: asyncio.Future) -> None:
    """Retrieve a dropped lane's outcome (a refusal or an error nobody waits for any more), so
    asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _warm_up() -> None:
    """Pay the first-call costs before the first fetch rather than in the first write: the
    compiled kernels load (1-2 s); a two-click batch runs through the table builders, so
    Arrow's group-by machinery initialises (~0.4 s) and the first take/cast/sort happen here."""
    pair_kernel.warm_up()
    sessionizer = Sessionizer({"a": "x", "b": "y"}, 60.0, 4)
    increments, visits = sessionizer.process(["user", "user"], ["a", "b"], [0.0, 1.0])
    ids = sessionizer.id_table()
    ids.to_arrow(increments)
    ids.touched_hashes([increments.keys])
    if visits is not None:
        Visits.table([visits], ids)
