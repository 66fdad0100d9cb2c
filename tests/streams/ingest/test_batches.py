"""Batch assembly without a broker or a database: fetches join one open batch per partition,
sealing hands out contiguous offset ranges with their tokens, a checkpoint covers exactly the
state at its position, and an intent is rebuilt over exactly its range."""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.config import Settings
from streams.ingest.batches import BatchAssembler, PartitionState
from streams.ingest.log_identity import mark_of
from streams.ingest.sessions import PairIncrements, Sessionizer

CATALOGUE = {"a": "phones", "b": "cases", "c": "chargers"}


@dataclass
class Message:
    offset: int
    timestamp: int
    value: bytes
    key: bytes = b"u1"


@dataclass
class TP:
    topic: str
    partition: int


def _click(offset: int, user: str, item: str, ts: float) -> Message:
    value = f'{{"event_id": "e{offset}", "user_id": "{user}", "item_id": "{item}", "ts": {ts}}}'.encode()
    return Message(offset, int(ts * 1000), value, user.encode())


def _partition() -> PartitionState:
    return PartitionState(Sessionizer(CATALOGUE, 1800, 20), position=0)


def test_two_fetches_make_one_batch_and_the_checkpoint_covers_its_end():
    settings = Settings()
    assembler, state, tp = BatchAssembler(settings, "clicks"), _partition(), TP("clicks", 0)
    first = [_click(0, "u1", "a", 1000.0), _click(1, "u1", "b", 1010.0), Message(2, 1_011_000, b"{bad")]
    second = [_click(3, "u1", "c", 1020.0), _click(4, "u2", "a", 1030.0)]
    for fetch in (first, second):  # the second arrives while the first would be writing
        messages, exact = assembler.take_messages(0, state, fetch)
        assembler.pair(tp, state, messages, exact, now=2000.0)
    assert assembler.events == 5 and [(m.offset, bad.reason) for _, m, bad in assembler.dlq] == [(2, "bad_json")]
    assert assembler.checkpoint_needed({0: state})
    sealed = assembler.seal({0: state}, due=True)
    (batch,) = sealed.tables
    assert (batch.start, batch.end) == (0, 5) and batch.token == "clicks:0:0:5:1000000"
    counts = batch.ids.to_arrow(PairIncrements.merge(batch.parts))
    assert sorted(zip(counts.column("item_a").to_pylist(), counts.column("item_b").to_pylist())) == [
        ("a", "b"), ("a", "c"), ("b", "c")]
    checkpoint = sealed.checkpoint
    assert checkpoint is not None and checkpoint.marks == [(0, mark_of(second[-1]))]
    (rows,) = checkpoint.sessions
    assert set(rows.column("version").to_pylist()) == {5} and sorted(rows.column("user_id").to_pylist()) == ["u1", "u2"]
    assert assembler.open == {} and assembler.events == 0 and not assembler.checkpoint_needed({0: state})


def test_a_fetch_already_processed_in_part_is_trimmed_at_the_position():
    assembler, state = BatchAssembler(Settings(), "clicks"), _partition()
    state.position = 2  # a restored checkpoint
    messages, _ = assembler.take_messages(0, state, [_click(k, "u1", "a", 1000.0 + k) for k in range(4)])
    assert [m.offset for m in messages] == [2, 3]


def test_an_intent_is_rebuilt_over_exactly_its_range():
    """After a crash the intent [0, 3) must be paired as one batch, however the fetches split it,
    and nothing beyond it may join: the same range, the same token, the same increments."""
    assembler, state, tp = BatchAssembler(Settings(), "clicks"), _partition(), TP("clicks", 0)
    state.replay_end, state.intents = 3, {3: 5}
    clicks = [_click(k, "u1", "abc"[k % 3], 1000.0 + k) for k in range(6)]
    messages, exact = assembler.take_messages(0, state, clicks[:2])
    assert messages == [] and [m.offset for m in state.pending] == [0, 1]  # held: the range is not complete
    messages, exact = assembler.take_messages(0, state, clicks[2:])
    assert exact and [m.offset for m in messages] == [0, 1, 2] and [m.offset for m in state.pending] == [3, 4, 5]
    assembler.pair(tp, state, messages, exact, now=2000.0)
    assert state.replay_end == 5  # the next intent of the chain
    assert assembler.take_messages(0, state, []) == ([], False)  # nothing joins the rebuilt one
    (batch,) = assembler.seal({0: state}, due=False).tables
    assert (batch.start, batch.end) == (0, 3)
