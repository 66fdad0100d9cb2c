"""The worker's endpoints, served for real and scraped over HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from streams.core import metrics
from streams.core.embedded_broker import free_port
from streams.serving.http import assignment_check, broker_check, build_app, serve, storage_check


def _get_all(app, paths):
    async def go():
        port = free_port()
        runner = await serve(app, port, "127.0.0.1")
        try:
            async with aiohttp.ClientSession() as session:
                out = {}
                for path in paths:
                    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                        out[path] = (response.status, await response.text())
                return out
        finally:
            await runner.cleanup()

    return asyncio.run(go())


def test_health_readiness_and_metrics(storage, broker):
    metrics.DLQ.labels(topic="clicks", reason="bad_json").inc()
    app = build_app({"clickhouse": storage_check(storage), "kafka": broker_check(broker.bootstrap),
                     "partitions": assignment_check(lambda: ([0, 2], {}))})
    got = _get_all(app, ["/healthz", "/readyz", "/metrics"])
    assert got["/healthz"][0] == 200
    assert got["/readyz"][0] == 200 and '"ready": true' in got["/readyz"][1]
    families = {f.name: f for f in text_string_to_metric_families(got["/metrics"][1])}
    ours = [f for name, f in families.items() if name.startswith("pairstream_")]
    assert len(ours) >= 15
    for family in ours:  # Prometheus naming: counters end in _total once exposed
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        assert not any("item" in label or "pair" == label for s in family.samples for label in s.labels)
    dead = [s for s in families["pairstream_dead_letters"].samples
            if s.name.endswith("_total") and s.labels.get("reason") == "bad_json"]
    assert dead and dead[0].value >= 1


def test_not_ready_without_partitions_or_clickhouse(storage, broker):
    class Down:
        def query_value(self, sql):
            raise ConnectionError("refused")

    app = build_app({"clickhouse": storage_check(Down()), "kafka": broker_check(broker.bootstrap),
                     "partitions": assignment_check(lambda: ([], {}))})
    status, body = _get_all(app, ["/readyz"])["/readyz"]
    assert status == 503
    assert '"kafka": {"ok": true' in body and '"clickhouse": {"ok": false' in body


def test_slow_and_surplus_connections_cannot_take_the_server_down():
    """Once 1,700 half-sent requests stayed open for good and ~1,000 idle connections
    exhausted the file limit. Now: past ``max_connections`` new ones are closed at once, a
    head that does not arrive within the deadline closes its connection, and the server
    keeps answering."""
    async def go():
        port = free_port()
        runner = await serve(build_app({}), port, "127.0.0.1", max_connections=40,
                             header_timeout_s=0.5, keepalive_s=1.0)
        refused_before = metrics.WEB_CONNECTIONS_REFUSED.labels("server_full")._value.get()
        slow_before = metrics.WEB_SLOW_CLIENTS_CLOSED._value.get()
        try:
            held = []
            for k in range(200):  # 200 connections: 40 get in, half of them dribbling a head
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if k % 2:
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
                held.append((reader, writer))
            await asyncio.sleep(0.2)
            refused = metrics.WEB_CONNECTIONS_REFUSED.labels("server_full")._value.get() - refused_before
            closed = 0  # the surplus ones read EOF straight away
            for reader, _ in held:
                try:
                    if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                        closed += 1
                except asyncio.TimeoutError:
                    pass
            await asyncio.sleep(0.8)  # past the head deadline: the 40 admitted are closed too
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    status = response.status
            slow = metrics.WEB_SLOW_CLIENTS_CLOSED._value.get() - slow_before
            for _, writer in held:
                writer.close()
            return refused, closed, slow, status, metrics.WEB_CONNECTIONS._value.get()
        finally:
            await runner.cleanup()

    refused, closed, slow, status, open_now = asyncio.run(go())
    assert refused == 160 and closed >= 160
    assert slow == 40 and status == 200 and open_now <= 1


def test_the_last_slots_are_kept_for_addresses_holding_few_connections():
    """Heavy addresses (each under its own cap) fill the server up to the reserve; then only a
    light address (a probe, a scraper) gets in, until the server is full for everyone."""
    from streams.serving.guard import LIGHT_USER, _Guard

    guard = _Guard(max_connections=100, header_timeout_s=1.0, max_per_address=30, reserved=10)
    admitted = {"heavy": 0, "light": 0}
    refusals = []
    for k in range(200):  # four heavy addresses, 50 tries each
        address = f"10.0.0.{k % 4}"
        reason = guard.refusal(address)
        if reason is None:
            guard.opened(address)
            admitted["heavy"] += 1
        else:
            refusals.append(reason)
    assert admitted["heavy"] == 90 and guard.live == 90  # 100 less the 10 reserved
    assert set(refusals) == {"reserved"}
    for k in range(20):  # light addresses: one connection each
        if guard.refusal(f"10.9.0.{k}") is None:
            guard.opened(f"10.9.0.{k}")
            admitted["light"] += 1
    assert admitted["light"] == 10 and guard.refusal("10.9.9.9") == "server_full"
    guard.closed("10.0.0.1")
    assert guard.refusal("10.0.0.1") == "reserved" and guard.refusal("10.9.9.9") is None
    guard = _Guard(max_connections=100, header_timeout_s=1.0, max_per_address=30, reserved=10)
    for _ in range(30):
        guard.opened("10.0.0.1")
    assert guard.refusal("10.0.0.1") == "per_address" and LIGHT_USER <= 30
