"""The lookup API (validation, table hits, computed pairs, partners) and hot reload under load."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from models.runtime import Students
from streams.lookup import Serving, add_routes
from streams.model_watch import ModelWatcher
from streams.publish import publish
from streams.topics import ensure_topics
from streams.trainer import announce

from student_fixtures import seed_pairs, tiny_students


@pytest.fixture
def published(storage, settings, tmp_path):
    data = seed_pairs(storage)
    first = tiny_students(storage, tmp_path, seed=0)
    result = publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    return data, first, result


async def _client(storage, settings):
    serving = Serving(storage, settings)
    await serving.reload()
    app = web.Application()
    add_routes(app, serving, settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    return serving, client


# slow-marked for now: passes alone and with its neighbours (27 s), but stalled once in the full
# default run after the ingest tests; under investigation (see README, Open work)
@pytest.mark.slow
def test_pair_scores_and_validation(storage, settings, published):
    data, first, result = published
    rows = storage.query_rows(f"SELECT item_a, item_b, score FROM {storage.table('pair_scores_latest')}")
    table = {(a, b): s for a, b, s in rows}
    known_items = sorted({a for a, _ in table} | {b for _, b in table})
    unseen = next((x, y) for x in known_items for y in known_items
                  if x < y and (x, y) not in table and data["items"])

    async def go():
        serving, client = await _client(storage, settings)
        try:
            asked = [[b, a] for a, b in list(table)[:100]]  # reversed order: canonicalised
            r = await client.post("/v1/pair-scores", data=orjson.dumps({"pairs": asked}))
            assert r.status == 200
            body = orjson.loads(await r.read())
            assert body["model_version"] == first["version"]
            assert body["score_version"] == result.score_version
            for (b, a), got in zip(asked, body["results"]):
                assert (got["item_a"], got["item_b"]) == (b, a) and got["source"] == "table"
                assert got["score"] == pytest.approx(table[(a, b)], abs=1e-4)
            r = await client.post("/v1/pair-scores", data=orjson.dumps(
                {"pairs": [{"item_a": unseen[0], "item_b": unseen[1]}, ["ghost-1", unseen[0]]]}))
            computed, ghost = orjson.loads(await r.read())["results"]
            assert computed["source"] == "computed" and computed["scorer"] == "two_tower"
            assert 1.0 <= computed["score"] <= 10.0
            assert ghost["source"] == "unknown_item" and ghost["score"] is None
            # what the client gets wrong: 4xx with the reason
            for payload, status, reason in (
                (b"{not json", 400, "not JSON"),
                (orjson.dumps({"pairs": [["a" * 129, "b"]]}), 400, "longer than 128"),
                (orjson.dumps({"pairs": [[1, "b"]]}), 400, "must be a string"),
                (orjson.dumps({"pairs": [["a", "a"]]}), 400, "same item"),
                (orjson.dumps({"pairs": [["a"]]}), 400, "expected"),
                (orjson.dumps({"pairs": [["a", "b"]] * 1001}), 413, "at most 1000"),
                (orjson.dumps({"rows": []}), 400, "expected"),
            ):
                r = await client.post("/v1/pair-scores", data=payload)
                assert r.status == status and reason in (await r.json())["error"]
            item = known_items[0]
            r = await client.get(f"/v1/items/{item}/partners?k=3")
            body = await r.json()
            assert r.status == 200 and 1 <= len(body["partners"]) <= 3
            assert [p["score"] for p in body["partners"]] == sorted(
                (p["score"] for p in body["partners"]), reverse=True)
            for query, status in (("k=0", 400), ("k=abc", 400), ("k=1001", 400)):
                assert (await client.get(f"/v1/items/{item}/partners?{query}")).status == status
            assert (await client.get("/v1/items/nobody/partners")).status == 404
            assert (await client.get(f"/v1/items/{'x' * 129}/partners")).status == 400
        finally:
            await client.close()

    asyncio.run(go())


@pytest.mark.slow
def test_hot_reload_under_load(storage, settings, published, broker, tmp_path):
    _, first, result = published
    settings = settings.replace(topic_model_updates=f"mu-{settings.app_id}")
    ensure_topics(broker.bootstrap, settings)
    second = tiny_students(storage, tmp_path, seed=1)
    pairs = storage.query_rows(f"SELECT item_a, item_b FROM {storage.table('pair_scores_latest')} LIMIT 50")

    async def go():
        from aiokafka import AIOKafkaProducer

        serving, client = await _client(storage, settings)
        watcher = ModelWatcher(broker.bootstrap, settings.topic_model_updates, serving)
        await watcher.start()
        watching = asyncio.ensure_future(watcher.run())
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        answers, errors = [], []

        async def load():
            after = 0  # answers from the new version: keep the load on past the swap
            while after < 20:
                r = await client.post("/v1/pair-scores", data=orjson.dumps({"pairs": pairs}))
                if r.status != 200:
                    errors.append(r.status)
                answers.append(orjson.loads(await r.read()))
                after += answers[-1]["model_version"] == second["version"]

        try:
            loader = asyncio.ensure_future(load())
            await asyncio.sleep(0.3)
            second_published = await asyncio.to_thread(
                publish, storage, settings, Students(second["version"], second["artifacts"]), False)
            await announce(producer, settings, {"event": "promoted", "model_version": second["version"],
                                                "score_version": second_published.score_version})
            await asyncio.wait_for(loader, 30)
        finally:
            watching.cancel()
            await watcher.stop()
            await producer.stop()
            await client.close()
        return second_published, answers, errors, watcher.seen

    second_published, answers, errors, seen = asyncio.run(go())
    assert not errors and seen == 1
    versions = {(a["model_version"], a["score_version"]) for a in answers}
    assert versions == {(first["version"], result.score_version),
                        (second["version"], second_published.score_version)}
    for answer in answers:  # every response answered wholly from one version
        assert {r["model_version"] for r in answer["results"]} == {answer["model_version"]}
        assert {r["source"] for r in answer["results"]} == {"table"}
