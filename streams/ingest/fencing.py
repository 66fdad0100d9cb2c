"""Owner epochs of the click partitions: a member that lost a partition cannot write to it.

A member paused through a rebalance (a blocked event loop, a long collection, a revoke callback
retrying through a ClickHouse outage) wakes up with writes for partitions another member has
already restored. Its offset ranges differ from the new owner's, so the deduplication tokens
differ and both land: counts doubled. Kafka fences such members for its own writes (offset
commits, transactions by producer epoch); ClickHouse has no such notion, so the ingest keeps one.

1. **Claim.** On assignment, before its restore reads anything, a member claims each partition:
   one row ``(topic, partition, epoch = newest + 1, claim_id)`` in ``ingest_owners``, written by
   one ``INSERT ... SELECT``. The owner is the newest claim by ``(epoch, claim_id)`` (two claims
   racing to one epoch still name one owner; the other finds itself fenced at its first write).
2. **Fenced writes.** Every write of a partition's state (intents, ``pair_counts``,
   ``user_item_days``, checkpoint marks, sessions, a rewind's deletes) carries "this claim is the
   newest" as its own ``WHERE``, checked by the statement that writes: a superseded member's
   write changes nothing, even one sent before the takeover.
3. **No write in flight across a claim.** A statement whose check ran before a claim must not
   commit after the claimer's restore read: chDB runs every statement of a data directory one at a
   time (one lock), so check and commit are one step; a server's claimer kills and waits out the
   fenced statements still running (``Storage.settle_fenced``).

So every write of a superseded member either landed before the claim (the new owner's restore
sees it, and replays its intent with the same token) or not at all: a takeover looks to the
data exactly like a crash of the old owner, which the intent protocol already recovers. After
each lane step the member asks whether its claims still stand (``superseded``); a fenced one
says so (error log, ``pairstream_fenced_writes_total``), drops what it holds and re-joins.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from streams.core.storage import Storage

OWNERS_TABLE = "ingest_owners"


class PartitionsFenced(Exception):
    """Writes refused: another member claimed these partitions since this one did."""

    def __init__(self, partitions: list[int]):
        self.partitions = sorted(partitions)
        super().__init__(f"partitions {self.partitions} were claimed by another member: "
                         "their writes were refused")


@dataclass(frozen=True)
class Claim:
    partition: int
    epoch: int
    claim_id: str


class OwnerFence:
    """The claims one ingest holds, and the conditions its writes carry."""

    def __init__(self, storage: Storage, topic: str):
        self.storage = storage
        self.topic = topic
        self.claims: dict[int, Claim] = {}

    def claim(self, partitions: list[int]) -> list[int]:
        """Claim ``partitions`` (blocking; before the restore reads anything). Returns those this
        member now owns; a claim that lost a race to the same epoch is left out."""
        if not partitions:
            return []
        claim_id = uuid.uuid4().hex
        owners = self.storage.table(OWNERS_TABLE)
        params: dict[str, Any] = {"fence_topic": self.topic, "fence_ps": sorted(partitions),
                                  "fence_claim": claim_id}
        # no correlated subquery (ClickHouse before 25.x has none): the newest epochs joined
        self.storage.command(
            f"""INSERT INTO {owners} (topic, partition, epoch, claim_id)
                SELECT {{fence_topic:String}}, want.p, have.newest + 1, {{fence_claim:String}}
                FROM (SELECT arrayJoin({{fence_ps:Array(UInt32)}}) AS p) AS want
                LEFT JOIN (SELECT partition, max(epoch) AS newest FROM {owners}
                           WHERE topic = {{fence_topic:String}} GROUP BY partition) AS have
                ON want.p = have.partition""", params)
        won = []
        for partition, epoch, newest_id in self.storage.query_rows(_newest_sql(owners), params):
            if newest_id == claim_id:
                self.claims[int(partition)] = Claim(int(partition), int(epoch), claim_id)
                won.append(int(partition))
        # statements of a previous owner still running must end before the restore reads
        self.storage.settle_fenced()
        return sorted(won)

    def release(self, partitions=None) -> None:
        """Forget claims (a revoke, a lost membership): nothing is written, the next owner's
        claim supersedes them."""
        if partitions is None:
            self.claims = {}
        for partition in partitions or ():
            self.claims.pop(partition, None)

    def current(self) -> "ClaimSet":
        """The claims held now, frozen: a write carries those it was sealed under, so a write
        left running from before a drop cannot borrow a later claim of the same partition."""
        return ClaimSet(self.storage.table(OWNERS_TABLE), self.topic,
                        tuple(sorted(self.claims.values(), key=lambda c: c.partition)))


@dataclass(frozen=True)
class ClaimSet:
    """Claims at one moment, and the conditions a write under them carries."""

    owners: str  # the qualified owner table
    topic: str
    claims: tuple[Claim, ...]

    def epoch(self, partition: int) -> int:
        return next((c.epoch for c in self.claims if c.partition == partition), 0)

    def rows_condition(self) -> tuple[str, dict[str, Any]]:
        """For rows with a ``partition`` column: keep a row only if its partition's newest claim
        is ours (a partition we hold no claim for matches nothing)."""
        return (f"(partition, {{fence_claims:Array(String)}}[indexOf({{fence_ps:Array(UInt32)}}, partition)]) "
                f"IN (SELECT partition, argMax(claim_id, (epoch, claim_id)) FROM {self.owners} "
                "WHERE topic = {fence_topic:String} GROUP BY partition)",
                {"fence_topic": self.topic, "fence_ps": [c.partition for c in self.claims],
                 "fence_claims": [c.claim_id for c in self.claims]})

    def partition_condition(self, partition: int) -> tuple[str, dict[str, Any]]:
        """For one partition's rows (no ``partition`` column): all of them if its newest claim is
        ours, none otherwise."""
        claim_id = next((c.claim_id for c in self.claims if c.partition == partition), "")
        return (f"(SELECT argMax(claim_id, (epoch, claim_id)) FROM {self.owners} "
                "WHERE topic = {fence_topic:String} AND partition = {fence_p:UInt32}) = {fence_claim:String}",
                {"fence_topic": self.topic, "fence_p": partition, "fence_claim": claim_id})

    def superseded(self, storage: Storage, partitions) -> list[int]:
        """Which of ``partitions`` are no longer ours under these claims (blocking; one small
        query): checked after each lane step."""
        wanted = sorted(set(partitions))
        if not wanted:
            return []
        mine = {c.partition: c.claim_id for c in self.claims}
        rows = storage.query_rows(_newest_sql(self.owners), {"fence_topic": self.topic, "fence_ps": wanted})
        newest = {int(p): claim_id for p, _, claim_id in rows}
        return [p for p in wanted if p not in mine or newest.get(p) != mine[p]]


def _newest_sql(owners: str) -> str:
    """Each partition's owner: its newest claim."""
    return (f"SELECT partition, max(epoch) AS newest_epoch, argMax(claim_id, (epoch, claim_id)) AS owner "
            f"FROM {owners} WHERE topic = {{fence_topic:String}} "
            "AND partition IN {fence_ps:Array(UInt32)} GROUP BY partition")
