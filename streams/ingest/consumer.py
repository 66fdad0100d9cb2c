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
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import functools
import gc
import logging
import random
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams.core import dead_letters, metrics
from streams.core.config import Settings
from streams.core.dead_letters import DeadLetter
from streams.core.storage import Storage, StorageError
from streams.core.storage.base import timestamp_array
from streams.ingest import kafka_reader
from streams.ingest import kernel as pair_kernel
from streams.ingest.decode import decode_clicks
from streams.ingest.log_identity import RecordMark, mark_of, read_marks
from streams.ingest.sessions import IdTable, PairIncrements, Sessionizer, Visits
from streams.ingest.tiers import TierRouter
from streams.ingest.user_items import aggregate_user_item_days, user_item_days

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

FETCH_MAX_RECORDS = 20000  # one getmany; batches grow beyond it while a write is in flight
OPEN_POLL_MS = 10  # fetch wait while paired events wait for the write in flight

SESSIONS_SCHEMA = pa.schema([
    ("topic", pa.string()),
    ("partition", pa.uint32()),
    ("user_id", pa.string()),
    ("items", pa.list_(pa.string())),
    ("times", pa.list_(pa.float64())),
    ("version", pa.uint64()),
])


@dataclass
class PartitionState:
    sessionizer: Sessionizer
    position: int  # next offset to process
    replay_end: int | None = None  # an intent to rebuild exactly before anything else
    pending: list = field(default_factory=list)  # messages held until replay_end is reached
    intents: dict[int, int] = field(default_factory=dict)  # start -> end, found at restore
    last_mark: RecordMark | None = None  # the newest processed record (``log_identity``)
    restored_mark: RecordMark | None = None  # the restored checkpoint's proof of its log


@dataclass
class OpenBatch:
    """One partition's paired but unwritten offset range ``[start, end)``."""

    tp: TopicPartition
    start: int
    end: int
    parts: list  # PairIncrements of each fetch that joined
    exact: bool  # an intent rebuilt after a crash: its range is fixed, nothing joins it
    visits: list = field(default_factory=list)  # each fetch's Visits, or its (users, items, times)
    first_stamp: int = 0  # Kafka timestamp of the batch's first message: part of its token


@dataclass
class SealedBatch:
    """An open batch handed to the count lane: everything its writes need, so the strings,
    the aggregation and the inserts are all made on the writer's thread."""

    tp: TopicPartition
    start: int
    end: int
    parts: list  # PairIncrements, interned: decoded through ``ids``
    ids: IdTable
    visits: list
    first_stamp: int

    @property
    def token(self) -> str:
        """The insert-deduplication token of its writes. The first message's Kafka timestamp
        tells a rewound or recreated log's batch from the old one at the same offsets; a
        replay reads the same message, so gets the same token."""
        return f"{self.tp.topic}:{self.tp.partition}:{self.start}:{self.end}:{self.first_stamp}"


@dataclass
class Checkpoint:
    """What a checkpoint writes: session rows taken at batch boundaries, and unrouted pairs."""

    sessions: list[pa.Table]  # rows of ``user_sessions``, one table per partition
    touched: list  # (IdTable, increment keys, day cap) per partition: the pairs incremented since the last one
    evicted: int
    marks: list = field(default_factory=list)  # (partition, RecordMark): what each partition's rows cover


@dataclass
class BatchReport:
    """What one flush did; handed to ``on_batch`` (benchmarks, the live demo view)."""

    events: int
    invalid: int
    pairs: int
    event_times: list[float]
    written_at: float  # when its pair_counts insert returned (visible to readers)


class ClickIngest:
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
        self.router = TierRouter(settings, storage)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._write_task: asyncio.Future | None = None  # count writes, one at a time
        self._checkpoint_task: asyncio.Future | None = None  # routing and sessions, in order
        self._commit_task: asyncio.Future | None = None  # offset commits, in order
        self._flush_lock = asyncio.Lock()
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="ingest-tables")
        self.totals: defaultdict[str, int] = defaultdict(int)
        self._changed_at: float | None = None  # first pairing since the last checkpoint
        self._unrouted: dict[int, list] = {}  # partition -> increment keys not yet routed
        self._open: dict[int, OpenBatch] = {}  # paired, not yet handed to a write
        self._open_dlq: list = []
        self._open_events = 0
        self._open_times: list[float] = []
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
                async with ingest._flush_lock:  # let an in-progress flush finish
                    await ingest._flush({}, force_checkpoint=True)
                    await ingest.drain()
                    for tp in revoked:
                        ingest.partitions.pop(tp.partition, None)
                        ingest._restoring.pop(tp.partition, None)
                        ingest._held_paused.discard(tp.partition)
                        ingest.resets.pop(tp.partition, None)

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
            **kafka_reader.consumer_options(),
        )
        producer = self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, max_batch_size=1 << 20)
        await producer.start()
        await consumer.start()
        kafka_reader.tune(consumer)
        consumer.subscribe([self.topic], listener=Listener())
        self.router.producer = producer

    async def stop(self) -> None:
        try:
            if self._consumer is not None and self.partitions:
                await self.checkpoint()
            await self.drain()
        finally:
            self._stopping.set()
        await self._close()

    async def abort(self) -> None:
        """Close the connections and write nothing more: what a killed process leaves behind."""
        self._stopping.set()
        for task in self._lanes():
            task.cancel()  # a step already in a thread still finishes, as it could in a crash
        self._write_task = self._checkpoint_task = self._commit_task = None
        await self._close()

    async def _close(self) -> None:
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

    def caught_up(self, end_offsets: dict[int, int]) -> bool:
        """True once every partition in ``end_offsets`` is processed and written up to its end."""
        return not self._busy() and not self._open and all(
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
            if self._failed():
                await self.drain()  # surface a failed write at once
            # paired events wait for the write in flight: look again soon, so they are sealed
            # into the next write as soon as it returns, not when the fetch times out
            wait_ms = OPEN_POLL_MS if self._open else int(flush_s * 1000)
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
            await self.flush(batches)  # also seals what is open once the writer is free
            # getmany returns without suspending while the fetcher has records buffered, so
            # yield after each fetch: otherwise a sealed write (and every hop of the one in
            # flight) waits until the consumer runs dry, and so does the socket read of the
            # next fetch response (256 KB a turn; see kafka_reader)
            await kafka_reader.let_reads_run()

    # --- recovery ----------------------------------------------------------------------
    async def _restore_partitions(self, tps) -> None:
        """Load the assigned partitions' sessions and positions from ClickHouse (see the
        module docstring), then place each partition's reading at its checkpoint.

        One query per table for all of them: the chDB calls run one at a time, and eight
        small queries (two per partition) took ~70 ms while the first fetches waited."""
        for tp in tps:
            self._restoring[tp.partition] = []  # the fetcher runs on meanwhile: keep what it returns
        partitions = sorted(tp.partition for tp in tps)
        params = {"topic": self.topic, "ps": partitions}
        rows = await self._with_retry(lambda: self.storage.query_arrow(
            f"""SELECT partition, user_id, argMax(items, version) AS items,
                       argMax(times, version) AS times, max(version) AS v
                FROM {self.storage.table('user_sessions')}
                WHERE topic = {{topic:String}} AND partition IN {{ps:Array(UInt32)}}
                GROUP BY partition, user_id""", params))
        states = {p: PartitionState(Sessionizer(self.catalogue, self.settings.session_window_s,
                                                self.settings.history_size), 0)
                  for p in partitions}
        if rows.num_rows:
            for p, state in states.items():
                mine = rows.filter(pc.equal(rows.column("partition"), p))
                if mine.num_rows:
                    state.sessionizer.restore(mine.column("user_id").to_pylist(),
                                              mine.column("items").to_pylist(),
                                              mine.column("times").to_pylist())
                    state.position = int(pc.max(mine.column("v")).as_py())
        # intents at or after each checkpoint: batches that may have been (partly) written
        intents = await self._with_retry(lambda: self.storage.query_rows(
            f"""SELECT partition, start_offset, max(end_offset)
                FROM {self.storage.table('ingest_batches')}
                WHERE topic = {{topic:String}} AND partition IN {{ps:Array(UInt32)}}
                  AND start_offset >= {{vs:Array(UInt64)}}[indexOf({{ps:Array(UInt32)}}, partition)]
                GROUP BY partition, start_offset""",
            {**params, "vs": [states[p].position for p in partitions]}))
        for p, start, end in intents:
            states[int(p)].intents[int(start)] = int(end)
        for state in states.values():
            state.replay_end = state.intents.get(state.position)
        # the newest mark at or before each checkpoint: the record it covers, to prove its log
        marks = await self._with_retry(lambda: self.storage.query_rows(
            f"""SELECT partition, max(position), argMax(record_timestamp, position),
                       argMax(record_digest, position)
                FROM {self.storage.table('ingest_checkpoints')}
                WHERE topic = {{topic:String}} AND partition IN {{ps:Array(UInt32)}}
                  AND position <= {{vs:Array(UInt64)}}[indexOf({{ps:Array(UInt32)}}, partition)]
                  AND position > 0
                GROUP BY partition""",
            {**params, "vs": [states[p].position for p in partitions]}))
        for p, position, stamp, mark_digest in marks:
            states[int(p)].restored_mark = RecordMark(int(position), int(stamp), int(mark_digest))
        replaced = await self._replaced_logs(states)
        await asyncio.gather(*(self._resume_at_checkpoint(tp, states[tp.partition], replaced.get(tp.partition))
                               for tp in tps))

    async def _replaced_logs(self, states: dict[int, PartitionState]) -> dict[int, str]:
        """Partitions whose log holds another record where their checkpoint's mark says (a
        refilled log taken for the old one), with what was found; ``log_identity``."""
        wanted = {p: st.restored_mark.offset for p, st in states.items() if st.restored_mark is not None}
        found = await read_marks(self.bootstrap, self.topic, wanted)
        replaced = {}
        for p, mark in found.items():
            expected = states[p].restored_mark
            if expected is not None and mark != expected:
                now = ("no record" if mark is None else
                       f"a record stamped {mark.timestamp} with digest {mark.digest:#x}")
                replaced[p] = (f"partition {p}: the checkpoint at offset {states[p].position} covers a "
                               f"record at offset {wanted[p]} stamped {expected.timestamp} with digest "
                               f"{expected.digest:#x}, but the log now holds {now} there: another log")
        unknown = sorted(set(wanted) - set(found))
        if unknown:  # beyond the log's end, deleted by retention, or no answer in time
            log.info("checkpoint marks of partitions %s not read: the offset check decides", unknown)
        return replaced

    async def _resume_at_checkpoint(self, tp, state: PartitionState, replaced: str | None = None) -> None:
        """Make a restored partition live: read on from its checkpoint, keeping what the
        consumer fetched meanwhile when that reaches back to it."""
        p, position = tp.partition, state.position
        if replaced is not None:
            repositioned = await self._declare_reset(tp, state, replaced, new_log=True)
        else:
            repositioned = await self._outside_log(tp, state)
        fetched = self._restoring.pop(p, [])  # no await from here on, or a fetch could slip in
        if p in self._held_paused:  # paused while holding; not if ``_offset_reset`` paused it
            self._held_paused.discard(p)
            if p not in self.resets:
                self.consumer.resume(tp)
        self.partitions[p] = state
        if repositioned:
            return
        if self._covers(fetched, position):
            # the consumer already reads on from the checkpoint: use what it fetched, since a
            # seek would discard its buffer and fetch it all again (a cold start's first
            # fetches, ~0.3 s of 100k events)
            state.pending = [m for m in fetched if m.offset >= position]
        else:
            self.consumer.seek(tp, position)  # within [log start, end]: ``_offset_reset`` checked
        log.info("partition %d restored: %d users, position %d, replay to %s",
                 p, state.sessionizer.num_users, position, state.replay_end)

    async def _outside_log(self, tp, state: PartitionState) -> bool:
        """``_offset_reset``, unless records fetched meanwhile reach back to the checkpoint
        first: they prove it lies inside the log. The broker's offset answers queue behind
        the fetches on the same connection (~0.1 s at start-up), and on a cold start the first
        fetch usually returns sooner."""
        p = tp.partition
        if self._fetched_cover(p, state.position):
            return False
        covered = asyncio.get_running_loop().create_future()
        self._cover_waiters[p] = (state.position, covered)
        asked = asyncio.ensure_future(self._offset_reset(tp, state))
        try:
            await asyncio.wait({asked, covered}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._cover_waiters.pop(p, None)
        if asked.done():
            return asked.result()
        # covered: the position is inside the log, so the answer would be False; it is still
        # only waiting on the broker (a reset acts only once both offsets are in)
        asked.cancel()
        return False

    async def _offset_reset(self, tp, state: PartitionState) -> bool:
        """Whether the restored position lies outside the partition's log, handled by
        ``on_offset_reset`` (True: the partition is paused or already repositioned).

        Beyond the end: the topic was recreated or the broker lost its log (the embedded
        broker keeps topics in memory, so every restart of it does this). Before the start:
        retention deleted messages nobody processed. Either way seeking to the checkpoint
        would wait forever, or silently skip, so it is said loudly (log, metric
        ``pairstream_offset_resets_total``, ``/readyz`` not ready via ``resets``) and then:
        ``fail`` pauses the partition until someone decides; ``rewind`` starts the
        partition over from the log's first message: beyond the end the old log's sessions and
        intents are dropped (they describe messages that no longer exist; batch tokens carry
        the first message's timestamp, so the new log's batches never collide with the old
        ones'); before the start, the lost range is skipped and counted."""
        first = (await self.consumer.beginning_offsets([tp]))[tp]
        end = (await self.consumer.end_offsets([tp]))[tp]
        if state.position > end:
            end = max(end, await self._fetched_end(tp))
        if first <= state.position <= end:
            return False
        where = "beyond the end" if state.position > end else "before the start"
        detail = (f"partition {tp.partition}: checkpoint at offset {state.position} is {where} "
                  f"of the log [{first}, {end})")
        return await self._declare_reset(tp, state, detail, new_log=state.position > end, first=first)

    async def _declare_reset(self, tp, state: PartitionState, detail: str, new_log: bool,
                             first: int | None = None) -> bool:
        """Say an offset reset loudly (log, metric, ``resets`` for ``/readyz``) and apply the
        policy: ``fail`` pauses the partition, ``rewind`` starts it over (True either way)."""
        policy = self.settings.offset_reset_policy
        metrics.OFFSET_RESETS.labels(policy=policy).inc()
        log.error("offset reset detected, %s; policy %s", detail, policy)
        if policy == "fail":
            self.resets[tp.partition] = detail + " (paused: PAIRSTREAM_ON_OFFSET_RESET=fail)"
            self.consumer.pause(tp)
            return True
        if first is None:
            first = (await self.consumer.beginning_offsets([tp]))[tp]
        return await self._rewind(tp, state, first, new_log)

    async def _fetched_end(self, tp, wait_s: float = 3.0) -> int:
        """The partition's end as a fetch response's high watermark says (0 if no fetch answers
        within ``wait_s``). Tansu answers ListOffsets(latest) with the newest batch's base
        offset + 1, short of the true end when that batch holds several records: a checkpoint at
        the true end would look "beyond the end", and ``rewind`` would count the log again. A
        fetch at the committed position answers even with no records, and its high watermark is
        right; on a new, shorter log that fetch is out of range and the reset to the log's start
        reports the new end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while (high := self.consumer.highwater(tp)) is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return high or 0

    async def _rewind(self, tp, state: PartitionState, first: int, new_log: bool) -> bool:
        if new_log:  # its history starts empty, and the old log's marks prove nothing about it
            params = {"topic": self.topic, "p": tp.partition}
            for table in ("user_sessions", "ingest_batches", "ingest_checkpoints"):
                await self._with_retry(lambda table=table: self.storage.command(
                    f"DELETE FROM {self.storage.table(table)} "
                    "WHERE topic = {topic:String} AND partition = {p:UInt32}", params))
            state.sessionizer = Sessionizer(
                self.catalogue, self.settings.session_window_s, self.settings.history_size)
            state.intents, state.replay_end = {}, None
        else:
            metrics.OFFSET_RESET_SKIPPED.inc(first - state.position)
        state.intents, state.replay_end = {}, None  # their messages are gone
        state.position = first
        self.consumer.seek(tp, first)
        log.warning("partition %d rewound to offset %d", tp.partition, first)
        return True

    def _fetched_cover(self, partition: int, position: int) -> bool:
        return self._covers(self._restoring.get(partition, ()), position)

    @staticmethod
    def _covers(fetched, position: int) -> bool:
        """Whether contiguous fetched records reach from at or before ``position`` to at or
        after it (so ``position`` is inside the log, and reading on from it needs no seek)."""
        return bool(fetched) and fetched[0].offset <= position <= fetched[-1].offset + 1

    def _hold_while_restoring(self, tp, messages) -> None:
        """Keep a restoring partition's records; past one fetch's worth, pause it (a restore
        waiting out a ClickHouse outage must not pull the whole partition into memory)."""
        held = self._restoring[tp.partition]
        held += messages
        waiter = self._cover_waiters.get(tp.partition)
        if waiter is not None and not waiter[1].done() and self._covers(held, waiter[0]):
            waiter[1].set_result(True)
        if len(held) >= min(self.settings.ingest_batch_events, FETCH_MAX_RECORDS):
            self.consumer.pause(tp)
            self._held_paused.add(tp.partition)

    # --- the batch -----------------------------------------------------------------------
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

    async def drain(self) -> None:
        """Wait for every write in flight: counts, checkpoint and commit (before a
        rebalance, a stop, or a test's check); raises what a failed one raised."""
        for lane in ("_write_task", "_checkpoint_task", "_commit_task"):
            task = getattr(self, lane)
            setattr(self, lane, None)
            if task is not None:
                await task

    def _lanes(self):
        return [t for t in (self._write_task, self._checkpoint_task, self._commit_task) if t is not None]

    def _writing(self) -> bool:
        """A count write is in flight (what sealing and back-pressure wait for)."""
        return self._write_task is not None and not self._write_task.done()

    def _busy(self) -> bool:
        return any(not t.done() for t in self._lanes())

    def _failed(self) -> bool:
        return any(t.done() and (t.cancelled() or t.exception() is not None) for t in self._lanes())

    def _stop_if_a_lane_failed(self) -> None:
        """Write nothing more once any lane failed (as a crashed process would not): raise
        its error here too, so the run loop sees it whichever lane it drains first."""
        for task in self._lanes():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def _flush(self, batches: dict, force_checkpoint: bool = False) -> None:
        now = self.clock()
        for tp in set(batches) | {tp for tp, st in self._tps() if st.pending}:
            state = self.partitions.get(tp.partition)
            if state is None:
                if tp.partition in self._restoring:
                    self._hold_while_restoring(tp, batches.get(tp, ()))
                continue  # or revoked meanwhile
            messages = state.pending + [m for m in batches.get(tp, ()) if m.offset >= state.position]
            state.pending = []
            batch = self._open.get(tp.partition)
            if batch is not None and batch.exact:
                state.pending = messages  # nothing joins an intent being rebuilt
                continue
            exact = state.replay_end is not None
            if exact:
                if not messages or messages[-1].offset + 1 < state.replay_end:
                    state.pending = messages  # keep reading until the intent's range is complete
                    continue
                state.pending = [m for m in messages if m.offset >= state.replay_end]
                messages = [m for m in messages if m.offset < state.replay_end]
            if messages:
                self._pair(tp, state, messages, batch, exact, now)
        if self._writing():
            if not force_checkpoint and self._open_events < self.settings.ingest_batch_events:
                return
            # back-pressure (or a forced checkpoint, which must follow this write): the count
            # lane only, a checkpoint in flight holds up neither
            task, self._write_task = self._write_task, None
            if task is not None:
                await task
        self._seal_if_needed(now, force_checkpoint)

    def _seal_if_needed(self, now: float, force_checkpoint: bool = False) -> None:
        # a checkpoint that comes due while the previous one is still being written waits for
        # the next seal after it (one checkpoint covers both), unless one is needed now
        due = force_checkpoint or (
            self._changed_at is not None
            and time.monotonic() - self._changed_at >= self.settings.checkpoint_interval_s
            and (self._checkpoint_task is None or self._checkpoint_task.done()))
        if self._open or (due and self._checkpoint_needed()):
            self._seal(due, now)

    def _on_write_done(self, task: asyncio.Future) -> None:
        """Seal what is open as soon as a count write returns, not when the consume loop's
        next fetch and pairing are done (~0.1 s a write under load, the writer idle).

        Safe without the flush lock: this runs on the event loop between steps, so no
        pairing is half done, and it stands back while a flush holds the lock."""
        if task.cancelled() or task.exception() is not None or self._stopping.is_set():
            return  # a failure surfaces in the run loop
        if task is not self._write_task or self._flush_lock.locked() or not self._open:
            return
        self._seal_if_needed(self.clock())

    def _pair(self, tp, state: PartitionState, messages: list, batch, exact: bool, now: float) -> None:
        """Decode, validate and pair one partition's messages into its open batch."""
        s = self.settings
        clicks = decode_clicks(messages, now, s.max_event_bytes, s.max_future_s)
        self._open_dlq += [(tp, msg, bad) for msg, bad in clicks.dead]
        users, items, times = clicks.users, clicks.items, clicks.times
        if self._changed_at is None:  # a checkpoint is due an interval after this
            self._changed_at = time.monotonic()
        sessionizer = state.sessionizer
        sessionizer.sync_catalogue()
        increments, visits = sessionizer.process(users, items, times)
        metrics.UNKNOWN_ITEMS.inc(sessionizer.unknown_items)
        sessionizer.unknown_items = 0
        self._open_times += times
        self._open_events += len(messages)
        start, end = state.position, messages[-1].offset + 1
        state.position = end
        state.last_mark = mark_of(messages[-1])
        if exact:
            state.replay_end = None
        if state.intents:  # the next batch of a chain that a crash interrupted
            state.replay_end = state.intents.pop(end, None)
        if batch is None:
            batch = self._open[tp.partition] = OpenBatch(tp, start, end, [], exact,
                                                         first_stamp=int(messages[0].timestamp or 0))
        batch.end = end
        batch.parts.append(increments)
        batch.visits.append(visits if visits is not None else (users, items, times))

    def _seal(self, due: bool, now: float) -> None:
        """Turn the open batches (and a checkpoint when due) into the next write."""
        tables = []
        for p, batch in sorted(self._open.items()):
            parts = [part for part in batch.parts if len(part)]
            if parts:
                self._unrouted.setdefault(p, []).extend(part.keys for part in parts)
            tables.append(SealedBatch(batch.tp, batch.start, batch.end, parts,
                                      self.partitions[p].sessionizer.id_table(), batch.visits,
                                      batch.first_stamp))
        checkpoint = self._take_checkpoint() if due else None
        dlq, events, event_times = self._open_dlq, self._open_events, self._open_times
        self._open, self._open_dlq, self._open_events, self._open_times = {}, [], 0, []
        if tables or dlq:
            self._write_task = asyncio.ensure_future(self._write_after(
                self._write_task, tables, dlq, now, events, event_times))
            self._write_task.add_done_callback(self._on_write_done)
        if checkpoint is not None:
            self._checkpoint_task = asyncio.ensure_future(self._checkpoint_after(
                self._checkpoint_task, self._write_task, checkpoint))

    def _checkpoint_needed(self) -> bool:
        return bool(self._unrouted) or any(st.sessionizer.has_dirty() for st in self.partitions.values())

    def _take_checkpoint(self) -> Checkpoint:
        """Session rows of every dirty user at its partition's position, idle users evicted.

        Taken synchronously between batches, so each row is the state exactly at ``version``."""
        self._changed_at = None
        idle_s = self.settings.session_window_s + self.settings.late_allowance_s
        cp = Checkpoint([], [], 0)
        # hashed on the checkpoint's thread: an ``IdTable`` outlives the compaction below
        cp.touched = [(self.partitions[p].sessionizer.id_table(), keys, self._horizon_day_cap(p))
                      for p, keys in self._unrouted.items()]
        self._unrouted = {}
        for p, state in self.partitions.items():
            users, items, times, evicted = state.sessionizer.checkpoint_columns(idle_s)
            if not users:
                continue
            n = len(users)
            cp.sessions.append(pa.table([
                pa.array([self.topic] * n, pa.string()), pa.array(np.full(n, p, np.uint32)),
                pa.array(users, pa.string()), items, times,
                pa.array(np.full(n, state.position, np.uint64)),
            ], schema=SESSIONS_SCHEMA))
            cp.evicted += evicted
            if state.last_mark is not None and state.last_mark.position == state.position:
                cp.marks.append((p, state.last_mark))
        sessionizers = [state.sessionizer for state in self.partitions.values()]
        if sum(s.compact() for s in sessionizers):  # every open batch is strings now: safe to re-intern
            _return_freed_memory()
        metrics.INGEST_INTERNED.labels(kind="users").set(sum(s.num_users for s in sessionizers))
        metrics.INGEST_INTERNED.labels(kind="items").set(sum(len(s.ids) for s in sessionizers))
        return cp

    async def _write_after(self, previous, tables, dlq, now, events, event_times):
        """One sealed batch: counts (one thread call: while the event loop is busy pairing
        the next fetch, every hop back to it costs a wait), then its dead letters, then the
        commit is handed to the commit lane."""
        if previous is not None:
            await previous
        self._stop_if_a_lane_failed()
        written = 0
        if tables:
            started = time.perf_counter()
            written = await self._with_retry(lambda: self._write_counts(tables, now))
            metrics.CH_WRITE_SECONDS.labels(table="pair_counts").observe(time.perf_counter() - started)
            metrics.PAIR_INCREMENTS.inc(written)
        written_at = self.clock()
        # dead letters here, not in the commit lane: before the checkpoint that covers them
        if dlq:
            await self._send_dlq(dlq)
        if tables:
            self._commit_task = asyncio.ensure_future(self._commit_after(self._commit_task, tables))
        self.totals["events"] += events
        self.totals["invalid"] += len(dlq)
        self.totals["pairs"] += written
        metrics.EVENTS_IN.labels(stage="ingest").inc(events)
        metrics.BATCH_SIZE.labels(stage="ingest").observe(events)
        if self.on_batch is not None:
            self.on_batch(BatchReport(events, len(dlq), written, event_times, written_at))

    async def _checkpoint_after(self, previous, counts, checkpoint: Checkpoint) -> None:
        """A checkpoint, after the previous one and the count write sealed with it."""
        for task in (previous, counts):
            if task is not None:
                await task
        self._stop_if_a_lane_failed()
        await self._write_checkpoint(checkpoint)

    async def _commit_after(self, previous, tables) -> None:
        """3. The Kafka commit of a written batch (lag monitoring; recovery does not use it)."""
        from aiokafka.structs import OffsetAndMetadata

        if previous is not None:
            await previous
        offsets = {t.tp: OffsetAndMetadata(t.end, "") for t in tables}
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a rebalance; state in ClickHouse covers it
            log.warning("offset commit failed (recovered from ClickHouse state): %s", exc)

    def _write_counts(self, tables: list[SealedBatch], now: float) -> int:
        """1. intents, 2. one deduplicated pair_counts insert per partition batch (blocking,
        on the writer's thread, like the aggregation and string building before it).
        Retrying the whole call is safe: intents are idempotent rows, a sealed batch gives
        the same rows every time, and the tokens drop inserts that already landed."""
        st = self.storage
        st.insert_arrow("ingest_batches", pa.table({
            "topic": pa.array([self.topic] * len(tables)),
            "partition": pa.array([t.tp.partition for t in tables], pa.uint32()),
            "start_offset": pa.array([t.start for t in tables], pa.uint64()),
            "end_offset": pa.array([t.end for t in tables], pa.uint64()),
            "created_at": timestamp_array([now] * len(tables)),
        }))
        written = 0
        # the builder thread makes the next batch's tables while this one inserts (chDB and
        # most of Arrow release the GIL, so the two overlap on two cores)
        for batch, (counts, visits) in zip(tables, self._builder.map(_batch_tables, tables)):
            if counts is not None:
                st.insert_arrow("pair_counts", counts, dedup_token=batch.token, unique_keys=True)
                written += counts.num_rows
            if visits is not None:  # same token, other table: exactly once like the counts
                st.insert_arrow("user_item_days", visits, dedup_token=batch.token, unique_keys=True)
        return written

    async def _write_checkpoint(self, cp: Checkpoint) -> None:
        # 4. routing of pairs that entered a tier since the last checkpoint: find and encode
        # (thread), produce (event loop), then the ledger (with the sessions, one thread call)
        routing = None
        if cp.touched:
            routing = await self._with_retry(lambda: self._plan_routing(cp.touched))
            await self.router.send(routing)
        sessions = pa.concat_tables(cp.sessions) if cp.sessions else None

        def ledger_and_sessions() -> None:
            if routing is not None:
                self.router.record(routing)
            # 5. the marks of the records the session rows cover, then the rows: a restore
            # finds the newest mark at or before its position (``log_identity``)
            if cp.marks:
                self.storage.insert_arrow("ingest_checkpoints", pa.table({
                    "topic": pa.array([self.topic] * len(cp.marks), pa.string()),
                    "partition": pa.array([p for p, _ in cp.marks], pa.uint32()),
                    "position": pa.array([m.position for _, m in cp.marks], pa.uint64()),
                    "record_timestamp": pa.array([m.timestamp for _, m in cp.marks], pa.int64()),
                    "record_digest": pa.array([m.digest for _, m in cp.marks], pa.uint64())}))
            if sessions is not None:
                self.storage.insert_arrow("user_sessions", sessions)

        started = time.perf_counter()
        await self._with_retry(ledger_and_sessions)
        metrics.CH_WRITE_SECONDS.labels(table="user_sessions").observe(time.perf_counter() - started)
        metrics.SESSIONS_EVICTED.inc(cp.evicted)

    def _horizon_day_cap(self, partition: int) -> int | None:
        """The newest day a partition's crossing check may end its horizon on: a day past its
        robust clock (``Sessionizer.clock``), as a click may be ``max_future_s`` ahead; None
        while the partition has too few live users for a clock."""
        clock = self.partitions[partition].sessionizer.clock()
        if clock == -np.inf:
            return None
        return int((clock + self.settings.max_future_s) // 86400)

    def _plan_routing(self, touched: list):
        """The touched pairs' hashes (over every partition) and their crossings (blocking)."""
        hashes, newest_day = [], 0
        for ids, keys, day_cap in touched:
            partition_hashes, partition_day = ids.touched_hashes(keys, day_cap)
            hashes.append(partition_hashes)
            newest_day = max(newest_day, partition_day)
        return self.router.plan(_distinct(hashes), dt.date(1970, 1, 1) + dt.timedelta(days=newest_day))

    async def _send_dlq(self, dlq: list) -> None:
        await dead_letters.send(self.producer, self.settings.topic_clicks_dlq, [
            DeadLetter(msg.key, msg.value, bad.reason, bad.detail, tp.topic, tp.partition, msg.offset)
            for tp, msg, bad in dlq])

    async def _with_retry(self, call):
        """Retry ClickHouse calls with capped exponential back-off; never give up silently."""
        delay = 0.1
        while True:
            try:
                return await asyncio.to_thread(call)
            except StorageError as exc:
                metrics.CH_ERRORS.inc()
                if self._stopping.is_set():
                    raise
                log.warning("ClickHouse unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.settings.storage_retry_max_s)


def _batch_tables(batch: SealedBatch) -> tuple[pa.Table | None, pa.Table | None]:
    """A sealed batch's ``pair_counts`` and ``user_item_days`` rows (blocking)."""
    counts = batch.ids.to_arrow(PairIncrements.merge(batch.parts)) if batch.parts else None
    interned = [part for part in batch.visits if isinstance(part, Visits)]
    strings = [part for part in batch.visits if not isinstance(part, Visits)]
    tables = [Visits.table(interned, batch.ids)] + [user_item_days(*part) for part in strings]
    tables = [table for table in tables if table is not None]
    if len(tables) > 1:
        return counts, aggregate_user_item_days(pa.concat_tables(tables))
    return counts, tables[0] if tables else None


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


def _distinct(parts: list[np.ndarray]) -> np.ndarray:
    """The distinct values of several uint64 arrays, by sort (numpy's sort releases the GIL,
    so on the checkpoint's thread this does not hold up the event loop)."""
    values = np.sort(np.concatenate(parts))
    keep = np.empty(len(values), np.bool_)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _return_freed_memory() -> None:
    """Hand the pages a compaction freed back to the OS: glibc keeps freed heap memory for
    reuse, so without this the worker's RSS stays at its peak. A no-op off glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
