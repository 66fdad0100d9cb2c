"""Batch assembly of the click ingest: fetched messages -> paired open batches -> sealed writes
and checkpoints. No broker and no storage here, so it can be driven and checked alone.

A partition's messages are decoded, validated and paired into its *open* batch, one contiguous
offset range ``[start, end)``; while a write is in flight, later fetches join it. Sealing hands
every open batch to the count lane as a ``SealedBatch`` and, when one is due, takes a
``Checkpoint``: the session rows of every dirty user at its partition's position, the pairs
touched since the last one (for the tier check) and the mark of the last record covered.
"""

from __future__ import annotations

import ctypes
import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from streams.core import metrics
from streams.core.config import Settings
from streams.ingest.decode import decode_clicks
from streams.ingest.log_identity import RecordMark, mark_of
from streams.ingest.sessions import IdTable, Sessionizer

if TYPE_CHECKING:
    from aiokafka.structs import TopicPartition

FETCH_MAX_RECORDS = 20000  # one getmany; batches grow beyond it while a write is in flight

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


@dataclass
class Sealed:
    """What one seal hands to the lanes."""

    tables: list[SealedBatch]
    checkpoint: Checkpoint | None
    dlq: list  # (tp, message, InvalidEvent)
    events: int
    event_times: list[float]


class BatchAssembler:
    """The open batches of every held partition, and what the next checkpoint must cover."""

    def __init__(self, settings: Settings, topic: str):
        self.settings = settings
        self.topic = topic
        self.open: dict[int, OpenBatch] = {}  # paired, not yet handed to a write
        self.dlq: list = []
        self.events = 0
        self.event_times: list[float] = []
        self.unrouted: dict[int, list] = {}  # partition -> increment keys not yet routed
        self.changed_at: float | None = None  # first pairing since the last checkpoint

    def take_messages(self, partition: int, state: PartitionState, fetched) -> tuple[list, bool]:
        """The messages of a fetch (with those held back before) to pair now, and whether
        they rebuild an intent exactly; what must wait stays in ``state.pending``."""
        messages = state.pending + [m for m in fetched if m.offset >= state.position]
        state.pending = []
        batch = self.open.get(partition)
        if batch is not None and batch.exact:
            state.pending = messages  # nothing joins an intent being rebuilt
            return [], False
        exact = state.replay_end is not None
        if exact:
            if not messages or messages[-1].offset + 1 < state.replay_end:
                state.pending = messages  # keep reading until the intent's range is complete
                return [], False
            state.pending = [m for m in messages if m.offset >= state.replay_end]
            messages = [m for m in messages if m.offset < state.replay_end]
        return messages, exact

    def pair(self, tp, state: PartitionState, messages: list, exact: bool, now: float) -> None:
        """Decode, validate and pair one partition's messages into its open batch."""
        s = self.settings
        clicks = decode_clicks(messages, now, s.max_event_bytes, s.max_future_s)
        self.dlq += [(tp, msg, bad) for msg, bad in clicks.dead]
        users, items, times = clicks.users, clicks.items, clicks.times
        if self.changed_at is None:  # a checkpoint is due an interval after this
            self.changed_at = time.monotonic()
        sessionizer = state.sessionizer
        sessionizer.sync_catalogue()
        increments, visits = sessionizer.process(users, items, times)
        metrics.UNKNOWN_ITEMS.inc(sessionizer.unknown_items)
        sessionizer.unknown_items = 0
        self.event_times += times
        self.events += len(messages)
        start, end = state.position, messages[-1].offset + 1
        state.position = end
        state.last_mark = mark_of(messages[-1])
        if exact:
            state.replay_end = None
        if state.intents:  # the next batch of a chain that a crash interrupted
            state.replay_end = state.intents.pop(end, None)
        batch = self.open.get(tp.partition)
        if batch is None:
            batch = self.open[tp.partition] = OpenBatch(tp, start, end, [], exact,
                                                        first_stamp=int(messages[0].timestamp or 0))
        batch.end = end
        batch.parts.append(increments)
        batch.visits.append(visits if visits is not None else (users, items, times))

    def checkpoint_due(self, checkpoint_busy: bool) -> bool:
        """An interval after the first change it would cover, once the previous one is written."""
        return (self.changed_at is not None and not checkpoint_busy
                and time.monotonic() - self.changed_at >= self.settings.checkpoint_interval_s)

    def checkpoint_needed(self, partitions: dict[int, PartitionState]) -> bool:
        return bool(self.unrouted) or any(st.sessionizer.has_dirty() for st in partitions.values())

    def seal(self, partitions: dict[int, PartitionState], due: bool) -> Sealed:
        """Turn the open batches (and a checkpoint when due) into the next write."""
        tables = []
        for p, batch in sorted(self.open.items()):
            parts = [part for part in batch.parts if len(part)]
            if parts:
                self.unrouted.setdefault(p, []).extend(part.keys for part in parts)
            tables.append(SealedBatch(batch.tp, batch.start, batch.end, parts,
                                      partitions[p].sessionizer.id_table(), batch.visits,
                                      batch.first_stamp))
        checkpoint = self.take_checkpoint(partitions) if due else None
        sealed = Sealed(tables, checkpoint, self.dlq, self.events, self.event_times)
        self.open, self.dlq, self.events, self.event_times = {}, [], 0, []
        return sealed

    def take_checkpoint(self, partitions: dict[int, PartitionState]) -> Checkpoint:
        """Session rows of every dirty user at its partition's position, idle users evicted.

        Taken synchronously between batches, so each row is the state exactly at ``version``."""
        self.changed_at = None
        idle_s = self.settings.session_window_s + self.settings.late_allowance_s
        cp = Checkpoint([], [], 0)
        # hashed on the checkpoint's thread: an ``IdTable`` outlives the compaction below
        cp.touched = [(partitions[p].sessionizer.id_table(), keys, self.horizon_day_cap(partitions[p]))
                      for p, keys in self.unrouted.items()]
        self.unrouted = {}
        for p, state in partitions.items():
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
        sessionizers = [state.sessionizer for state in partitions.values()]
        if sum(s.compact() for s in sessionizers):  # every open batch is strings now: safe to re-intern
            _return_freed_memory()
        metrics.INGEST_INTERNED.labels(kind="users").set(sum(s.num_users for s in sessionizers))
        metrics.INGEST_INTERNED.labels(kind="items").set(sum(len(s.ids) for s in sessionizers))
        return cp

    def horizon_day_cap(self, state: PartitionState) -> int | None:
        """The newest day a partition's crossing check may end its horizon on: a day past its
        robust clock (``Sessionizer.clock``), as a click may be ``max_future_s`` ahead; None
        while the partition has too few live users for a clock."""
        clock = state.sessionizer.clock()
        if clock == -np.inf:
            return None
        return int((clock + self.settings.max_future_s) // 86400)


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
