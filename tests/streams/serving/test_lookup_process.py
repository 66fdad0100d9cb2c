"""Lookup processes: the worker's snapshot exported and mapped back, and the lookup API answered
by a separate process, the same answers as the worker's, while the worker's loop is held."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request

import orjson
import pyarrow as pa
from aiohttp import web

from streams.core.embedded_broker import free_port
from streams.core.events import Item
from streams.ingest.catalogue import Catalogue
from streams.serving.export import ExportWriter, export_root, read_export, write_export
from streams.serving.http import serve
from streams.serving.index import UPDATE_COLUMNS
from streams.serving.lookup import Serving
from streams.serving.lookup_process import LookupProcess
from streams.serving.routes import add_item_rows_route, add_routes

STEP_S = 180  # a stall fails here, with a traceback, not at the suite's timeout


def _updates(storage, n: int = 10) -> pa.Table:
    """``n`` published pairs with a new score, and one pair the version never had."""
    rows = storage.query_arrow(f"SELECT {UPDATE_COLUMNS} FROM {storage.table('pair_scores_latest')} "
                               f"ORDER BY item_a, item_b LIMIT {n}")
    schema = rows.schema
    rows = rows.set_column(rows.column_names.index("score"), "score", pa.array([9.5] * n, pa.float32()))
    new = rows.slice(0, 1)
    new = new.set_column(0, "item_a", pa.array(["zz-new-a"])).set_column(1, "item_b", pa.array(["zz-new-b"]))
    both = pa.concat_tables([rows.cast(schema), new.cast(schema)])
    return both.append_column("scored_ms", pa.array([int(time.time() * 1000)] * both.num_rows, pa.int64()))


def _same_index(one, other, pairs) -> None:
    assert (one.score_version, one.model_version, one.ids) == (other.score_version, other.model_version, other.ids)
    rows_one, rows_other = one.lookup_rows(pairs), other.lookup_rows(pairs)
    assert rows_one == rows_other
    hits = [row for hit, _, _, row in rows_one if hit]
    assert one.evidence_rows(hits) == other.evidence_rows(hits)
    for item in one.ids:
        assert one.partners(item, 1000) == other.partners(item, 1000)
        first, second = one.embedding(item), other.embedding(item)
        assert (first is None) == (second is None)
        if first is not None:
            assert first.tolist() == second.tolist()


def test_an_export_maps_back_to_the_index_it_was_written_from(storage, settings, published, tmp_path):
    pairs = [tuple(p) for p in storage.query_rows(
        f"SELECT item_a, item_b FROM {storage.table('pair_scores_latest')}")]
    pairs += [("zz-new-a", "zz-new-b"), (pairs[0][0], "not-an-item")]

    async def go():
        serving = Serving(storage, settings)
        await serving.reload()
        before = serving.current.index
        await serving.apply_updates(before.score_version, _updates(storage))
        return before, serving.current.index

    before, after = asyncio.run(go())
    assert len(after) == len(before) + 1
    root = tmp_path / "exports-root"
    for index in (before, after):
        directory = write_export(root, index, None)
        mapped, meta = read_export(root, directory.name)
        assert meta["students"] is None and meta["updated_through"] == index.updated_through
        _same_index(index, mapped, pairs)
    assert len(list((root / "exports").iterdir())) == 2  # the current one and the one before
    for _ in range(3):
        write_export(root, after, None)
    assert len(list((root / "exports").iterdir())) == 2


def _post(base: str, path: str, body: dict, token: str = "", timeout: float = 30) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(base + path, orjson.dumps(body), headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return orjson.loads(response.read())


def _get(base: str, path: str, token: str = "", timeout: float = 30) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=timeout) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def test_a_lookup_process_answers_as_the_worker_does_and_while_the_worker_loop_is_held(
        storage, settings, published):
    """The worker's side runs here (its ``Serving``, its exports, its web routes); the lookup
    process is a real child on its own port. Its answers equal the worker's, follow the worker's
    refreshes, and keep coming while the worker's event loop is held for seconds (a refresh's
    swap, a burst of ingest): before lookup processes, every lookup waited that out."""
    token = "t0ken-for-the-test"
    settings = settings.replace(web_port=free_port(), lookup_port=free_port(), api_token=token)
    data, first, result = published
    pairs = [list(p) for p in storage.query_rows(
        f"SELECT item_a, item_b FROM {storage.table('pair_scores_latest')} ORDER BY item_a, item_b LIMIT 40")]
    published_items = {x for p in pairs for x in p}
    # an item the version never embedded: the lookup process asks the worker for its catalogue row
    Catalogue().upsert(storage, [Item("fresh-item-1", data["items"][0].category, "a fresh listing")])
    asked = pairs + [[pairs[0][0], "fresh-item-1"], [pairs[0][0], "no-such-item"]]
    lookup_base = f"http://127.0.0.1:{settings.lookup_port}"

    async def go():
        serving = Serving(storage, settings)
        exports = ExportWriter(export_root(settings.data_dir))
        serving.listeners.append(exports.offer)
        exports.start()
        app = web.Application()
        add_routes(app, serving, settings)
        add_item_rows_route(app, storage)
        from streams.serving.auth import bearer_token

        app.middlewares.append(bearer_token(token))
        runner = await serve(app, settings.web_port)
        lookup = LookupProcess(settings)
        try:
            await asyncio.to_thread(lookup.start)  # before any export: alive, not ready
            status, body = await asyncio.to_thread(_get, lookup_base, "/readyz")
            assert status == 503 and "no snapshot" in body["checks"]["snapshot"]["detail"]
            await serving.reload()
            expected = await serving.score_pairs([tuple(p) for p in asked])

            async def lookup_answer(body_pairs):
                return await asyncio.to_thread(_post, lookup_base, "/v1/pair-scores", {"pairs": body_pairs}, token)

            deadline = time.monotonic() + STEP_S
            while (answer := await lookup_answer(asked))["score_version"] != result.score_version:
                assert time.monotonic() < deadline, answer
                await asyncio.sleep(0.1)
            status, ready = await asyncio.to_thread(_get, lookup_base, "/readyz")
            partners_here = await asyncio.to_thread(_get, lookup_base, f"/v1/items/{pairs[0][0]}/partners?k=5", token)
            unauthorised = await asyncio.to_thread(_get, lookup_base, f"/v1/items/{pairs[0][0]}/partners")

            # a refresh of the worker: the lookup process serves the updated scores
            updates = _updates(storage)
            await serving.apply_updates(result.score_version, updates)
            changed = [[a, b] for a, b in zip(updates.column("item_a").to_pylist(),
                                              updates.column("item_b").to_pylist())]
            while any(r["score"] != 9.5 for r in (await lookup_answer(changed))["results"]):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)

            # the worker's loop held for 4 s: lookups on the lookup port answer all along
            latencies: list[float] = []

            def client():
                end = time.monotonic() + 3.5
                while time.monotonic() < end:
                    asked_at = time.monotonic()
                    _post(lookup_base, "/v1/pair-scores", {"pairs": pairs[:5]}, token)
                    latencies.append(time.monotonic() - asked_at)

            thread = threading.Thread(target=client)
            thread.start()
            time.sleep(4.0)  # holds this (the worker's) event loop, as a long callback would
            await asyncio.to_thread(thread.join)
            return expected, answer, status, ready, partners_here, unauthorised, latencies, serving
        finally:
            await asyncio.to_thread(lookup.stop)
            await exports.stop()
            await runner.cleanup()

    expected, answer, status, ready, partners_here, unauthorised, latencies, serving = asyncio.run(
        asyncio.wait_for(go(), 2 * STEP_S))
    assert answer == expected  # every field of every result, in the asked order
    sources = [r["source"] for r in answer["results"]]
    assert sources[:len(pairs)] == ["table"] * len(pairs)
    assert sources[len(pairs):] == ["computed", "unknown_item"]  # fresh-item-1 embedded on request
    assert "fresh-item-1" not in published_items
    assert status == 200 and ready["ready"], ready
    assert partners_here[0] == 200 and len(partners_here[1]["partners"]) >= 1
    assert unauthorised[0] == 401
    # each lookup takes milliseconds; waiting out the 4 s hold would show as one of >= 3.5 s
    assert len(latencies) >= 20, latencies
    assert max(latencies) < 2.0, sorted(latencies)[-5:]
