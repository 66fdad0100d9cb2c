"""Running the click ingest in the test process against the session's broker and chDB: a
generated dataset with its reference counts, the catalogue, and a run until a condition."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from streams.core.topics import ensure_topics
from streams.dev.synthetic import generate
from streams.ingest.catalogue import Catalogue
from streams.ingest.reference import reference_counts
from tests.kafka import produce

# a wait fails only when nothing it waits on has moved for this long
NO_PROGRESS_S = float(os.environ.get("PAIRSTREAM_TEST_NO_PROGRESS_S", "90"))

BAD = [
    b"{not json",
    b'{"event_id": "x1", "user_id": "u1", "item_id": "i1"}',
    b'{"event_id": "x2", "user_id": 3, "item_id": "i1", "ts": 1}',
    b'{"event_id": "x3", "user_id": "u1", "item_id": "i1", "ts": 99999999999}',
    b'{"event_id": "x4", "user_id": "u1", "item_id": "' + b"z" * 70000 + b'", "ts": 1}',
]


def dataset(settings, broker, n_events=6000, bad_every=0):
    items, clicks = generate(400, 60, n_events, seed=11)
    ensure_topics(broker.bootstrap, settings)
    messages = []
    for i, click in enumerate(clicks):
        messages.append((click.user_id.encode(), click.to_json()))
        if bad_every and i % bad_every == 0:
            messages.append((click.user_id.encode(), BAD[(i // bad_every) % len(BAD)]))
    produce(broker.bootstrap, settings.topic_clicks, messages)
    categories = {item.item_id: item.category for item in items}
    expected = reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks], categories)
    return items, clicks, messages, expected


def loaded_catalogue(storage, items):
    catalogue = Catalogue()
    catalogue.upsert(storage, items)
    return catalogue


def table_counts(storage):
    rows = storage.query_rows(
        f"SELECT item_a, item_b, toUInt32(day), sum(count) FROM {storage.table('pair_counts')} "
        f"GROUP BY item_a, item_b, day")
    return {(a, b, d): n for a, b, d, n in rows}


async def run_until(ingests, total=None, timeout=90, end_offsets=None, until=None):
    """Run the ingests until they processed ``total`` events, reached ``end_offsets`` or
    ``until()`` says so."""
    for ingest in ingests:
        await ingest.start()
    deadline = time.monotonic() + timeout

    def done():
        if time.monotonic() > deadline:
            return True
        if until is not None:
            return until()
        if end_offsets is not None:
            return all(i.caught_up({p: e for p, e in end_offsets.items() if p in i.partitions})
                       for i in ingests) and set(end_offsets) <= {p for i in ingests for p in i.partitions}
        return sum(i.totals["events"] for i in ingests) >= total
    try:
        await asyncio.gather(*(i.run(until=done) for i in ingests))
    finally:
        for ingest in ingests:
            await ingest.stop()
    return sum(i.totals["events"] for i in ingests)


class Member(threading.Thread):
    """One ingest on its own thread and event loop, until ``finish``."""

    def __init__(self, ingest, storage=None):
        """``storage``: a store that needs the member's event loop (the fencing tests' freezer)."""
        super().__init__(daemon=True)
        self.ingest, self.storage = ingest, storage
        self._finish = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by ``finish``
            self.error = exc

    async def _main(self):
        if self.storage is not None:
            self.storage.loop = asyncio.get_running_loop()
        await self.ingest.start()
        try:
            await self.ingest.run(until=self._finish.is_set)
        finally:
            await self.ingest.stop()

    def finish(self):
        self._finish.set()
        self.join(60)
        assert not self.is_alive(), "the member did not stop"
        if self.error is not None:
            raise self.error

    def describe(self) -> str:
        ingest = self.ingest
        held = {p: (st.position, st.replay_end, len(st.pending)) for p, st in ingest.partitions.items()}
        return (f"{self.name}: events {ingest.totals['events']}, held (position, replay, pending) {held}, "
                f"open {sorted(ingest.batches.open)}, writing {ingest._busy()}, restoring {sorted(ingest._restoring)}")  # noqa: SLF001

    def progress(self):
        return (self.ingest.totals["events"], tuple(sorted(self.ingest.partitions)))


def wait_for(condition, *members, what: str):
    """Wait until ``condition()``; fail only after NO_PROGRESS_S without any member moving."""
    last, moved_at = None, time.monotonic()
    while not condition():
        now = [m.progress() for m in members]
        if now != last:
            last, moved_at = now, time.monotonic()
        assert time.monotonic() - moved_at < NO_PROGRESS_S, (
            f"no progress for {NO_PROGRESS_S:.0f} s: {what}; " + "; ".join(m.describe() for m in members))
        time.sleep(0.05)
