"""Recovery of the click ingest's partitions: restore a checkpoint, prove it belongs to the log,
say offset resets loudly and apply their policy.

On assignment a partition restores its sessions at their newest version ``v`` (one query per
table for every assigned partition), the intents recorded since, and the mark of the record
its checkpoint covers (``log_identity``), then reads on from ``v``. A checkpoint outside the
log (beyond its end, before its start) or over another log (a refilled one) is an offset reset:
``fail`` pauses the partition (``/readyz`` says why), ``rewind`` starts it over. The protocol
these steps restore is in ``streams.ingest.consumer``'s docstring.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from streams.core import metrics
from streams.ingest.batches import FETCH_MAX_RECORDS, PartitionState
from streams.ingest.fencing import OwnerFence
from streams.ingest.log_identity import RecordMark, read_marks
from streams.ingest.membership import request_rejoin
from streams.ingest.part import IngestPart
from streams.ingest.sessions import Sessionizer

if TYPE_CHECKING:
    pass

log = logging.getLogger("streams.ingest.consumer")


class PartitionRecovery(IngestPart):
    """The recovery half of ``ClickIngest`` (a mixin: it shares the ingest's state)."""

    bootstrap: str
    fence: OwnerFence
    catalogue: Any
    partitions: dict[int, PartitionState]
    resets: dict[int, str]
    _restoring: dict[int, list]
    _held_paused: set[int]
    _cover_waiters: dict[int, tuple]

    async def _restore_partitions(self, tps) -> None:
        """Load the assigned partitions' sessions and positions from ClickHouse (see the
        module docstring), then place each partition's reading at its checkpoint.

        One query per table for all of them: the chDB calls run one at a time, and eight
        small queries (two per partition) took ~70 ms while the first fetches waited.

        First the partitions are claimed (``streams.ingest.fencing``): from then on a previous
        owner's writes are refused, so what is read below is all that will ever land of them.
        A partition whose claim lost a race is not restored; the member re-joins instead."""
        for tp in tps:
            self._restoring[tp.partition] = []  # the fetcher runs on meanwhile: keep what it returns
        wanted = sorted(tp.partition for tp in tps)
        self.fence.release(wanted)
        claimed = await self._with_retry(lambda: self.fence.claim(wanted))
        if claimed != wanted:
            lost = sorted(set(wanted) - set(claimed))
            self._claim_lost(lost)
            tps = [tp for tp in tps if tp.partition in claimed]
            if not tps:
                return
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
        # intents at or after each checkpoint: batches that may have been (partly) written; at
        # one start offset, the newest owner's (an older owner's cannot land after our claim,
        # but one that landed before an owner that wrote past it must not be followed)
        intents = await self._with_retry(lambda: self.storage.query_rows(
            f"""SELECT partition, start_offset, argMax(end_offset, (owner_epoch, end_offset))
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
        replaced, proven = await self._replaced_logs(states)
        await asyncio.gather(*(self._resume_at_checkpoint(tp, states[tp.partition], replaced.get(tp.partition),
                                                          tp.partition in proven)
                               for tp in tps))

    def _claim_lost(self, lost: list[int]) -> None:
        """Partitions another member claimed at the same moment: not restored, paused, and the
        group asked to rebalance (whoever the coordinator names claims them again)."""
        from aiokafka.structs import TopicPartition

        log.error("partitions %s were claimed by another member at the same moment: not restored; "
                  "re-joining the group", lost)
        metrics.INGEST_PARTITIONS_DROPPED.labels(reason="claim_race").inc(len(lost))
        for p in lost:
            self._restoring.pop(p, None)
            self.consumer.pause(TopicPartition(self.topic, p))
        request_rejoin(self.consumer)

    async def _replaced_logs(self, states: dict[int, PartitionState]) -> tuple[dict[int, str], set[int]]:
        """Partitions whose log holds another record where their checkpoint's mark says (a
        refilled log taken for the old one), with what was found; ``log_identity``. And the
        partitions whose mark was read back as recorded at the checkpoint itself: their log
        holds the record just before the checkpoint, so the checkpoint lies inside it."""
        wanted = {p: st.restored_mark.offset for p, st in states.items() if st.restored_mark is not None}
        found = await read_marks(self.bootstrap, self.topic, wanted,
                                 fetch_wait_ms=self.settings.fetch_wait_ms(100))
        proven = {p for p, mark in found.items()
                  if mark is not None and mark == states[p].restored_mark and mark.position == states[p].position}
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
        return replaced, proven

    async def _resume_at_checkpoint(self, tp, state: PartitionState, replaced: str | None = None,
                                    proven: bool = False) -> None:
        """Make a restored partition live: read on from its checkpoint, keeping what the
        consumer fetched meanwhile when that reaches back to it. ``proven``: the record just
        before the checkpoint was read back, so no offset check is needed (one answered from a
        stale high watermark once took a checkpoint another member had just written for one
        beyond the end, and ``rewind`` counted the partition again)."""
        p, position = tp.partition, state.position
        if replaced is not None:
            repositioned = await self._declare_reset(tp, state, replaced, new_log=True)
        elif proven:
            repositioned = False
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
            # fenced: a restore that stalled past a takeover must not delete the new owner's rows
            fence, fence_params = self.fence.current().partition_condition(tp.partition)
            params = {"topic": self.topic, "p": tp.partition, **fence_params}
            for table in ("user_sessions", "ingest_batches", "ingest_checkpoints"):
                await self._with_retry(lambda table=table: self.storage.command(
                    f"DELETE FROM {self.storage.table(table)} "
                    f"WHERE topic = {{topic:String}} AND partition = {{p:UInt32}} AND {fence}", params))
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
