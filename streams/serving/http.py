"""The worker's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``.

With ``PAIRSTREAM_API_TOKEN`` set, everything but the two probes needs the bearer token.

``/healthz`` answers while the process's event loop runs (liveness). ``/readyz`` answers 200
only when ClickHouse answers ``SELECT 1``, the broker answers a metadata request and the click
ingest holds at least one partition; otherwise 503 with the failing checks (readiness).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.serving.auth import bearer_token

Check = Callable[[], Awaitable[tuple[bool, str]]]


def build_app(checks: dict[str, Check], timeout_s: float = 2.0,
              client_max_size: int = 4 << 20, api_token: str = "") -> web.Application:
    """The probes and ``/metrics``; routes added later share the token (``streams.serving.auth``)."""
    async def healthz(_request):
        return web.json_response({"alive": True})

    async def readyz(_request):
        results = {}
        for name, check in checks.items():
            try:
                ok, detail = await asyncio.wait_for(check(), timeout_s)
            except Exception as exc:  # noqa: BLE001 - a failing check is the answer
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results[name] = {"ok": ok, "detail": detail}
        ready = all(r["ok"] for r in results.values())
        return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)

    async def metrics(_request):
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=client_max_size)  # request bodies: 413 past it
    if api_token:
        app.middlewares.append(bearer_token(api_token))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def storage_check(storage) -> Check:
    async def check():
        value = await asyncio.to_thread(storage.query_value, "SELECT 1")
        return value == 1, "SELECT 1"
    return check


def broker_check(bootstrap: str) -> Check:
    async def check():
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        await admin.start()
        try:
            topics = await admin.list_topics()
        finally:
            await admin.close()
        return True, f"{len(topics)} topics"
    return check


Held = Callable[[], tuple[list[int], dict[int, str]]]  # (held click partitions, paused resets)


def assignment_check(held: Held) -> Check:
    """Ready while the click ingest holds partitions and none is paused by an offset reset."""
    async def check():
        held_now, resets = held()
        if resets:  # paused by on_offset_reset=fail: held, but not consuming
            return False, "; ".join(resets[p] for p in sorted(resets))
        return bool(held_now), f"click partitions {held_now}"
    return check


async def serve(app: web.Application, port: int, host: str = "127.0.0.1", max_connections: int = 512,
                header_timeout_s: float = 10.0, keepalive_s: float = 15.0,
                max_per_address: int | None = None, reserved: int = 0, reuse_port: bool = False) -> web.AppRunner:
    """Start ``app`` guarded against slow and greedy clients (``streams.serving.guard``);
    ``reuse_port``: several processes share the port (``SO_REUSEPORT``)."""
    from streams.serving.guard import GuardedAppRunner

    runner = GuardedAppRunner(app, max_connections, header_timeout_s, max_per_address, reserved,
                              access_log=None, keepalive_timeout=keepalive_s)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    return runner


async def serve_with_settings(app: web.Application, settings) -> web.AppRunner:
    """``serve`` on the worker's web settings (port, bind, every connection limit)."""
    return await serve(app, settings.web_port, settings.web_host, settings.web_max_connections,
                       settings.web_header_timeout_s, settings.web_keepalive_s,
                       settings.web_max_connections_per_address, settings.web_reserved_connections)
