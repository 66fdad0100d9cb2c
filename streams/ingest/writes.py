"""The write lanes of the click ingest: counts, checkpoints and commits, each in order.

Three lanes of futures, each awaiting the one before it: a count write (intents, then the
batch's ``pair_counts`` and ``user_item_days`` with its deduplication token, then its dead
letters), a checkpoint (tier routing, then marks and session rows: after the count writes
sealed before it) and an offset commit. ClickHouse calls run in a thread and are retried with
capped back-off; once a lane fails nothing more is written, as in a crashed process. The
protocol is in ``streams.ingest.consumer``'s docstring.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa

from streams.core import dead_letters, metrics
from streams.core.dead_letters import DeadLetter
from streams.core.storage.base import timestamp_array
from streams.ingest.batches import BatchReport, Checkpoint, SealedBatch
from streams.ingest.fencing import ClaimSet, OwnerFence, PartitionsFenced
from streams.ingest.part import IngestPart
from streams.ingest.sessions import PairIncrements, Visits
from streams.ingest.tiers import TierRouter
from streams.ingest.user_items import aggregate_user_item_days, user_item_days

if TYPE_CHECKING:
    pass

log = logging.getLogger("streams.ingest.consumer")


class WriteLanes(IngestPart):
    """The writing half of ``ClickIngest`` (a mixin: it shares the ingest's state)."""

    router: TierRouter
    fence: OwnerFence
    clock: Callable[[], float]
    on_batch: Callable[[BatchReport], None] | None
    totals: defaultdict[str, int]
    _builder: ThreadPoolExecutor
    _write_task: asyncio.Future | None
    _checkpoint_task: asyncio.Future | None
    _commit_task: asyncio.Future | None

    async def drain(self) -> None:
        """Wait for every write in flight: counts, checkpoint and commit (before a
        rebalance, a stop, or a test's check); raises what a failed one raised."""
        for lane in ("_write_task", "_checkpoint_task", "_commit_task"):
            task = getattr(self, lane)
            setattr(self, lane, None)
            if task is not None:
                await await_lane(task)

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

    async def _write_after(self, previous, tables, dlq, now, events, event_times, claims: ClaimSet):
        """One sealed batch: counts (one thread call: while the event loop is busy pairing
        the next fetch, every hop back to it costs a wait), then its dead letters, then the
        commit is handed to the commit lane. Written under the claims it was sealed with."""
        if previous is not None:
            await previous
        self._stop_if_a_lane_failed()
        written = 0
        if tables:
            started = time.perf_counter()
            written = await self._with_retry(lambda: self._write_counts(tables, now, claims))
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

    async def _checkpoint_after(self, previous, counts, checkpoint: Checkpoint, claims: ClaimSet) -> None:
        """A checkpoint, after the previous one and the count write sealed with it."""
        for task in (previous, counts):
            if task is not None:
                await task
        self._stop_if_a_lane_failed()
        await self._write_checkpoint(checkpoint, claims)

    async def _commit_after(self, previous, tables) -> None:
        """3. The Kafka commit of a written batch (lag monitoring; recovery does not use it)."""
        from aiokafka.structs import OffsetAndMetadata

        if previous is not None:
            await previous
        offsets = {t.tp: OffsetAndMetadata(t.end, "") for t in tables}
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a rebalance; state in ClickHouse covers it
            # the broker fences a lost member's commit (unknown member, stale generation): aiokafka
            # then forgets the generation, and the revoke it calls on re-joining drops the
            # partitions without writing (``membership_lost``); the owner fence refuses the rest
            log.warning("offset commit failed (recovered from ClickHouse state): %s", exc)

    def _write_counts(self, tables: list[SealedBatch], now: float, claims: ClaimSet) -> int:
        """1. intents, 2. one deduplicated pair_counts insert per partition batch (blocking,
        on the writer's thread, like the aggregation and string building before it), each
        fenced by the claims it was sealed under (``streams.ingest.fencing``); then whether
        those claims still stand (``PartitionsFenced`` if not: what was refused did not land).
        Retrying the whole call is safe: intents are idempotent rows, a sealed batch gives
        the same rows every time, and the tokens drop inserts that already landed."""
        st = self.storage
        short = False  # a statement wrote fewer rows than it had: refused, or a repeat dropped

        # a short write tells a refusal only for all-or-nothing conditions where views add rows
        # (pair_counts: one partition's condition per insert; ``Storage.insert_arrow_if``)
        def insert(table: str, data: pa.Table, fence: str, params: dict, **options) -> None:
            nonlocal short
            written = st.insert_arrow_if(table, data, fence, params, **options)
            short = short or written is None or written < data.num_rows

        rows_fence, rows_params = claims.rows_condition()
        insert("ingest_batches", pa.table({
            "topic": pa.array([self.topic] * len(tables)),
            "partition": pa.array([t.tp.partition for t in tables], pa.uint32()),
            "start_offset": pa.array([t.start for t in tables], pa.uint64()),
            "end_offset": pa.array([t.end for t in tables], pa.uint64()),
            "created_at": timestamp_array([now] * len(tables)),
            "owner_epoch": pa.array([claims.epoch(t.tp.partition) for t in tables], pa.uint64()),
        }), rows_fence, rows_params)
        written = 0
        # the builder thread makes the next batch's tables while this one inserts (chDB and
        # most of Arrow release the GIL, so the two overlap on two cores)
        for batch, (counts, visits) in zip(tables, self._builder.map(_batch_tables, tables)):
            fence, params = claims.partition_condition(batch.tp.partition)
            if counts is not None:
                insert("pair_counts", counts, fence, params, dedup_token=batch.token, unique_keys=True)
                written += counts.num_rows
            if visits is not None:  # same token, other table: exactly once like the counts
                insert("user_item_days", visits, fence, params, dedup_token=batch.token, unique_keys=True)
        # only a short write can have been refused: then ask whether the claims still stand
        fenced = claims.superseded(st, [t.tp.partition for t in tables]) if short else []
        if fenced:
            raise PartitionsFenced(fenced)
        return written

    async def _write_checkpoint(self, cp: Checkpoint, claims: ClaimSet) -> None:
        # 4. routing of pairs that entered a tier since the last checkpoint: find and encode
        # (thread), produce (event loop), then the ledger (with the sessions, one thread call)
        routing = None
        if cp.touched:
            routing = await self._with_retry(lambda: self._plan_routing(cp.touched))
            await self.router.send(routing, self.producer)
        sessions = pa.concat_tables(cp.sessions) if cp.sessions else None
        fence, params = claims.rows_condition()

        def ledger_and_sessions() -> None:
            if routing is not None:  # the ledger is not fenced: routing is at-least-once anyway
                self.router.record(routing)
            # 5. the marks of the records the session rows cover, then the rows: a restore
            # finds the newest mark at or before its position (``log_identity``); both fenced
            complete = True
            if cp.marks:
                marks = pa.table({
                    "topic": pa.array([self.topic] * len(cp.marks), pa.string()),
                    "partition": pa.array([p for p, _ in cp.marks], pa.uint32()),
                    "position": pa.array([m.position for _, m in cp.marks], pa.uint64()),
                    "record_timestamp": pa.array([m.timestamp for _, m in cp.marks], pa.int64()),
                    "record_digest": pa.array([m.digest for _, m in cp.marks], pa.uint64())})
                got = self.storage.insert_arrow_if("ingest_checkpoints", marks, fence, params)
                complete = got is not None and got >= marks.num_rows
            if sessions is not None:
                got = self.storage.insert_arrow_if("user_sessions", sessions, fence, params)
                complete = complete and got is not None and got >= sessions.num_rows
            if complete:
                return
            written = {p for p, _ in cp.marks}
            if sessions is not None:
                written.update(int(p) for p in sessions.column("partition").unique().to_pylist())
            fenced = claims.superseded(self.storage, written)
            if fenced:
                raise PartitionsFenced(fenced)

        started = time.perf_counter()
        await self._with_retry(ledger_and_sessions)
        metrics.CH_WRITE_SECONDS.labels(table="user_sessions").observe(time.perf_counter() - started)
        metrics.SESSIONS_EVICTED.inc(cp.evicted)

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



async def await_lane(task: asyncio.Future) -> None:
    """Wait for a lane step; one cancelled because its partitions were dropped meanwhile
    (``ClickIngest._forget_partitions``) has nothing to surface. A cancellation of the waiter
    itself still propagates."""
    try:
        await task
    except asyncio.CancelledError:
        waiter = asyncio.current_task()
        if not task.cancelled() or (waiter is not None and waiter.cancelling()):
            raise


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


def _distinct(parts: list[np.ndarray]) -> np.ndarray:
    """The distinct values of several uint64 arrays, by sort (numpy's sort releases the GIL,
    so on the checkpoint's thread this does not hold up the event loop)."""
    values = np.sort(np.concatenate(parts))
    keep = np.empty(len(values), np.bool_)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]
