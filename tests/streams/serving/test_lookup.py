"""The lookup API (validation, table hits, computed pairs, partners) and hot reload under load."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from models.runtime import Students
from streams.core.topics import ensure_topics
from streams.publishing.promotion import announce
from streams.publishing.publisher import publish
from streams.serving.lookup import Serving
from streams.serving.routes import add_routes
from streams.serving.watcher import ModelWatcher
from tests.storage_doubles import Unreachable
from tests.student_fixtures import tiny_students

STEP_S = 120  # a stall fails here, with a traceback of where it waited, not at the suite's timeout


async def _client(storage, settings):
    serving = Serving(storage, settings)
    await serving.reload()
    app = web.Application(client_max_size=settings.lookup_max_body_bytes)
    add_routes(app, serving, settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    return serving, client


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

    asyncio.run(asyncio.wait_for(go(), STEP_S))


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
            await announce(producer, settings, "promoted", second["version"], second_published.score_version)
            await asyncio.wait_for(loader, 30)
        finally:
            watching.cancel()
            await watcher.stop()
            await producer.stop()
            await client.close()
        return second_published, answers, errors, watcher.seen

    second_published, answers, errors, seen = asyncio.run(asyncio.wait_for(go(), STEP_S))
    assert not errors and seen == 1
    versions = {(a["model_version"], a["score_version"]) for a in answers}
    assert versions == {(first["version"], result.score_version),
                        (second["version"], second_published.score_version)}
    for answer in answers:  # every response answered wholly from one version
        assert {r["model_version"] for r in answer["results"]} == {answer["model_version"]}
        assert {r["source"] for r in answer["results"]} == {"table"}


def test_bad_model_updates_keep_the_current_snapshot(storage, settings, published):
    """Tombstones, junk and versions never published are rejected before anything swaps:
    once an unknown version swapped in an empty index and lookups lost the published scores."""
    _, first, result = published

    async def go():
        serving = Serving(storage, settings)
        await serving.reload()
        watcher = ModelWatcher("unused:9092", settings.topic_model_updates, serving)
        before = serving.current
        verdicts = [await watcher.handle(value) for value in (
            None, b"", b"123", b"[1]", b"{not json", b'{"score_version": 5}',
            b'{"score_version": "../../etc/passwd"}', b'{"score_version": "no-such-version"}')]
        kept = serving.current is before
        accepted = await watcher.handle(orjson.dumps({"score_version": result.score_version}))
        return verdicts, kept, accepted, serving.current.index.score_version, watcher.seen

    verdicts, kept, accepted, live, seen = asyncio.run(go())
    assert verdicts == [False] * 8 and kept
    assert accepted and live == result.score_version and seen == 1


def test_a_version_still_being_written_or_a_clickhouse_outage_keeps_the_current_snapshot(
        storage, settings, published):
    """A score version whose status is still ``writing`` has some rows and was accepted (readers
    would have swapped to half a table); a ClickHouse outage while checking a version raised out
    of the watcher and would have stopped the worker. Both are rejected and nothing swaps."""
    from streams.core.storage import scores

    _, first, result = published
    half = scores.new_score_version(first["version"])
    scores.set_status(storage, half, first["version"], "writing")
    storage.insert_arrow("pair_scores", storage.query_arrow(  # some of its rows already landed
        f"SELECT * REPLACE ({{v:String}} AS score_version) FROM {storage.table('pair_scores')} "
        f"WHERE score_version = {{old:String}} LIMIT 10", {"v": half, "old": result.score_version}))

    async def go():
        serving = Serving(storage, settings)
        await serving.reload()
        watcher = ModelWatcher("unused:9092", settings.topic_model_updates, serving)
        before = serving.current
        writing = await watcher.handle(orjson.dumps({"score_version": half}))
        serving._storage = Unreachable()  # noqa: SLF001 - ClickHouse gone, as seen from inside
        outage = await watcher.handle(orjson.dumps({"score_version": result.score_version}))
        return writing, outage, serving.current is before

    writing, outage, kept = asyncio.run(asyncio.wait_for(go(), STEP_S))
    assert writing is False and outage is False and kept


def test_hostile_http_requests_get_4xx_and_the_documented_limits_fit(storage, settings, published):
    """Strict query integers (``k=²`` and a 5,000-digit k were 500s), a 1000-pair request of
    escaped 128-char ids (1.5 MB; once 413 from aiohttp's silent 1 MiB default) answered,
    and with ``api_token`` set the lookup API, /status and /metrics want the bearer token while
    the probes stay open."""
    from streams.ops.status_page import add_status_route
    from streams.serving.http import build_app

    settings = settings.replace(api_token="s3cret-test-token")
    item = storage.query_rows(f"SELECT item_a FROM {storage.table('pair_scores_latest')} LIMIT 1")[0][0]

    async def go():
        serving = Serving(storage, settings)
        await serving.reload()
        app = build_app({}, client_max_size=settings.lookup_max_body_bytes, api_token=settings.api_token)
        add_routes(app, serving, settings)
        add_status_route(app, storage, lambda: (None, None, 0), list)
        client = TestClient(TestServer(app))
        await client.start_server()
        auth = {"Authorization": "Bearer s3cret-test-token"}
        try:
            statuses = {}
            for query in ("k=%C2%B2", "k=" + "9" * 5000, "k=-1", "k=1.5", "k=%EF%BC%91", "k=3"):
                r = await client.get(f"/v1/items/{item}/partners?{query}", headers=auth)
                statuses[query[:8]] = r.status
            ids = [("é" * 127 + str(k % 10), "ü" * 127 + str(k % 10)) for k in range(1000)]
            body = orjson.dumps({"pairs": [[a, b] for a, b in ids]}).decode()
            escaped = body.encode("ascii", "backslashreplace").replace(b"\\x", b"\\u00")
            big = await client.post("/v1/pair-scores", data=escaped, headers=auth)
            too_big = await client.post("/v1/pair-scores", data=b" " * (5 << 20), headers=auth)
            no_token = await client.get(f"/v1/items/{item}/partners")
            wrong = await client.get(f"/v1/items/{item}/partners", headers={"Authorization": "Bearer x"})
            health = await client.get("/healthz")
            closed = {path: (await client.get(path)).status for path in ("/status", "/metrics", "/nowhere")}
            scrape = await client.get("/metrics", headers=auth)
            answered = len((await big.json())["results"]) if big.status == 200 else None
            return (statuses, len(escaped), big.status, answered, too_big.status, no_token.status,
                    wrong.status, health.status, closed, scrape.status)
        finally:
            await client.close()

    statuses, size, big, answered, too_big, no_token, wrong, health, closed, scrape = asyncio.run(go())
    assert statuses == {"k=%C2%B2": 400, "k=999999": 400, "k=-1": 400, "k=1.5": 400,
                        "k=%EF%BC": 400, "k=3": 200}
    assert size > 1.5e6 and big == 200 and answered == 1000 and too_big == 413
    assert (no_token, wrong, health) == (401, 401, 200)
    assert closed == {"/status": 401, "/metrics": 401, "/nowhere": 401} and scrape == 200


def test_one_address_holding_2000_slow_connections_leaves_the_port_to_the_others(storage, settings, published):
    """An audit held 1,100-2,000 slow connections from one host and the single 512 cap let
    6 of 41 probes through. With the shipped limits, while one address (127.0.0.1, its own
    process) keeps trying to hold 2,000 unfinished requests, reopening refused ones at up to
    1,000 a second (20 times slowhttptest's default), another address's lookups, each on
    a new connection, all answer promptly, and probes and scrapes from a third answer."""
    import subprocess
    import sys
    import time

    import aiohttp

    from streams.core.embedded_broker import free_port
    from streams.serving.http import build_app, serve_with_settings
    from tests.paths import REPO_ROOT

    settings = settings.replace(web_port=free_port())
    item = storage.query_rows(f"SELECT item_a FROM {storage.table('pair_scores_latest')} LIMIT 1")[0][0]
    base = f"http://127.0.0.1:{settings.web_port}"

    async def timed_gets(source: str, paths: list[str], pause_s: float = 0.0) -> list[tuple[int, float]]:
        out = []
        for path in paths:  # a new connection each time: admission is what is under test
            await asyncio.sleep(pause_s)
            connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                started = time.perf_counter()
                async with session.get(base + path) as r:
                    await r.read()
                    out.append((r.status, time.perf_counter() - started))
        return out

    async def go():
        serving = Serving(storage, settings)
        await serving.reload()
        app = build_app({}, client_max_size=settings.lookup_max_body_bytes)
        add_routes(app, serving, settings)
        runner = await serve_with_settings(app, settings)
        attack = [sys.executable, "-m", "tests.slow_clients", str(settings.web_port), "2000", "1000"]
        attacker = subprocess.Popen(attack, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        try:
            held = 0
            deadline = time.monotonic() + 60
            while held < settings.web_max_connections_per_address and time.monotonic() < deadline:
                line = await asyncio.to_thread(attacker.stdout.readline)
                held = int(line.split()[1]) if line.startswith("held") else held
            refused_before = metrics.WEB_CONNECTIONS_REFUSED.labels("per_address")._value.get()
            await timed_gets("127.0.0.2", [f"/v1/items/{item}/partners?k=5"] * 20)  # warm
            # spread over ~3 s, while the attacker's refused slots keep reconnecting (each a second on)
            lookups = await timed_gets("127.0.0.2", [f"/v1/items/{item}/partners?k=5"] * 300, 0.01)
            probes = await timed_gets("127.0.0.3", ["/healthz", "/metrics"] * 20)
            refused = metrics.WEB_CONNECTIONS_REFUSED.labels("per_address")._value.get() - refused_before
            return held, lookups, probes, refused, attacker.poll()
        finally:
            attacker.kill()
            attacker.wait()
            await runner.cleanup()

    from streams.core import metrics

    held, lookups, probes, refused, attacker_exit = asyncio.run(go())
    latencies = sorted(seconds for _, seconds in lookups)
    p99_ms = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    assert attacker_exit is None and held == settings.web_max_connections_per_address  # the attack was on
    assert refused > 2000  # its other connections were turned away, again and again, meanwhile
    assert [status for status, _ in lookups] == [200] * 300
    assert [status for status, _ in probes] == [200] * 40
    # answered promptly, not after queueing behind the attack: 2.5-6 ms alone here, and
    # `pairstream bench serve` measures it (during_idle_other_address_p99_ms, ~2 ms); the bound
    # leaves room for a neighbouring test taking one of the two cores in the parallel suite
    assert p99_ms <= 50, f"lookup p99 {p99_ms:.1f} ms from another address under the attack"
