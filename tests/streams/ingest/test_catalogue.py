"""The catalogue follows the compacted ``items`` topic: upserts, tombstones, bad messages."""

from __future__ import annotations

import orjson

from streams.core.events import Item
from streams.core.storage.items import products
from streams.ingest.catalogue import Catalogue


def _item(item_id: str, category: str) -> bytes:
    return orjson.dumps({"item_id": item_id, "category": category, "title": f"{item_id} title"})


def test_tombstones_delete_and_bad_messages_lose_nothing_else(storage):
    """An empty value is how a compacted topic deletes a key: once it crashed the agent and
    the rest of its batch was lost. Now the item leaves the table and pairing; the batch's
    other messages, before and after it, are applied in order."""
    catalogue = Catalogue()
    outcome = catalogue.apply(storage, [
        (b"a", _item("a", "shoes")), (b"b", _item("b", "bags")), (b"c", _item("c", "hats")),
        (b"a", None),                      # delete a
        (b"b", b""),                       # delete b (empty, not null)
        (b"b", _item("b", "belts")),       # ... and b comes back later in the same batch
        (None, None), (b"\xff", None),     # tombstones naming no valid item
        (b"x", b"{not json"), (b"y", b'{"item_id": "y"}'),
        (b"d", _item("d", "socks")),
    ])
    assert (outcome.upserted, outcome.deleted) == (5, 2)
    assert [(index, reason) for index, reason, _ in outcome.rejected] == [
        (6, "bad_tombstone"), (7, "bad_tombstone"), (8, "bad_json"), (9, "missing_field")]
    assert dict(catalogue) == {"b": "belts", "c": "hats", "d": "socks"}
    rows = products(storage, ["a", "b", "c", "d"])
    assert {k: v["category"] for k, v in rows.items()} == {"b": "belts", "c": "hats", "d": "socks"}
    reloaded = Catalogue().load(storage)  # a restarted worker sees the same catalogue
    assert dict(reloaded) == dict(catalogue)


def test_memory_follows_the_catalogue_after_mass_deletes(storage):
    """Deleting most items shrinks the in-memory table (a dict keeps its size after deletes
    unless rebuilt), in place: pairing keeps the same object and sees the remaining items."""
    import sys

    catalogue = Catalogue()
    catalogue.upsert(storage, [Item(f"i{k}", f"c{k % 9}") for k in range(20_000)])
    full = sys.getsizeof(catalogue)
    same = catalogue
    catalogue.delete(storage, [f"i{k}" for k in range(15_000)])
    assert same is catalogue and len(catalogue) == 5_000 and catalogue["i19999"] == "c1"
    assert sys.getsizeof(catalogue) < full / 2, (sys.getsizeof(catalogue), full)
    assert catalogue.changed_since(catalogue.version - 1) == [f"i{k}" for k in range(15_000)]


def test_a_run_of_tombstones_is_one_delete(storage, monkeypatch):
    """A marketplace delisting thousands of items at once: one DELETE per run of tombstones
    (a mutation each used to make the items agent fall minutes behind)."""
    catalogue = Catalogue()
    catalogue.upsert(storage, [Item(f"i{k}", "c") for k in range(600)])
    statements = []
    command = storage.command
    monkeypatch.setattr(storage, "command", lambda sql, *a, **k: (statements.append(sql), command(sql, *a, **k))[1])
    outcome = catalogue.apply(storage, [(f"i{k}".encode(), None) for k in range(500)]
                              + [(b"n1", _item("n1", "new"))] + [(b"i599", None)])
    assert (outcome.upserted, outcome.deleted) == (1, 501)
    assert sum(sql.lstrip().startswith("DELETE") for sql in statements) == 2  # 500, then 1 after the upsert
    assert sorted(catalogue) == sorted([f"i{k}" for k in range(500, 599)] + ["n1"])
    assert len(products(storage, [f"i{k}" for k in range(600)])) == 99


def test_the_worker_applies_items_without_blocking_its_event_loop(storage, monkeypatch):
    """The items agent shares the worker's loop with the click ingest and the web server: a
    slow DELETE must run beside them, not stop them (the in-memory change follows it)."""
    import asyncio
    import time

    catalogue = Catalogue()
    catalogue.upsert(storage, [Item("a", "c"), Item("b", "c")])
    command = storage.command

    def slow_command(sql, *args, **kwargs):
        time.sleep(0.6)
        return command(sql, *args, **kwargs)

    monkeypatch.setattr(storage, "command", slow_command)

    async def go():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.create_task(ticker())
        outcome = await catalogue.apply_async(storage, [(b"a", None), (b"n", _item("n", "new"))])
        task.cancel()
        return outcome, ticks

    outcome, ticks = asyncio.run(go())
    assert (outcome.upserted, outcome.deleted) == (1, 1) and dict(catalogue) == {"b": "c", "n": "new"}
    assert ticks >= 10, ticks  # the loop ran on while the DELETE took 0.6 s
