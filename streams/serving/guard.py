"""Slow and greedy clients cannot take the worker's web server down.

Why: aiohttp's server has no limit on open connections and no deadline for a request head:
1,700 half-sent requests stayed open for good, and ~1,000 idle connections exhausted the open
file limit (1024) and crashed the worker (health, metrics and lookups all live on this port).

- **Connection limits**, checked when a connection opens; one beyond them is closed at once
  (``pairstream_web_connections_refused_total{reason}``) and the ones already open are served
  as before:
  - ``web_max_connections`` in all (``server_full``), below the open-file limit;
  - ``web_max_connections_per_address`` from one remote address (``per_address``), so one
    client, slow or greedy, cannot hold the whole port (an audit's 2,000 slow connections
    from one host left 6 of 41 health probes answered);
  - the last ``web_reserved_connections`` go only to addresses holding fewer than
    ``LIGHT_USER`` connections (``reserved``): liveness probes and Prometheus open one or
    two, so they still get in when many heavy addresses fill the rest.
- **Head deadline** (``web_header_timeout_s``): from the moment a connection opens, or new bytes
  arrive on an idle keep-alive connection, its request head must be complete within the
  deadline, else the connection is closed. Idle keep-alive connections close after
  ``web_keepalive_s`` (aiohttp's own timer; its default is an hour).
- Request bodies: the lookup handler reads them under ``web_header_timeout_s`` too.

Implemented as a ``RequestHandler`` subclass made by a ``Server`` wrapper, because aiohttp
exposes no hook for either limit. It uses aiohttp's ``Server._kwargs`` and the handler's
``_messages`` / ``_request_in_progress`` (aiohttp 3.9 to 3.14); ``tests/streams/serving/test_http.py`` opens
slow and surplus connections against a real server, so an aiohttp change that breaks this
fails there.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from streams.core import metrics

LIGHT_USER = 4  # addresses holding fewer connections than this may use the reserved slots


class _Guard:
    def __init__(self, max_connections: int, header_timeout_s: float,
                 max_per_address: int | None = None, reserved: int = 0):
        self.max_connections = max_connections
        self.max_per_address = max_per_address or max_connections
        self.reserved = reserved
        self.header_timeout_s = header_timeout_s
        self.live = 0
        self.by_address: Counter[str] = Counter()

    def refusal(self, address: str) -> str | None:
        """Why a new connection from ``address`` is refused, or None to admit it."""
        if self.live >= self.max_connections:
            return "server_full"
        held = self.by_address[address]
        if held >= self.max_per_address:
            return "per_address"
        if held >= LIGHT_USER and self.live >= self.max_connections - self.reserved:
            return "reserved"
        return None

    def opened(self, address: str) -> None:
        self.live += 1
        self.by_address[address] += 1
        metrics.WEB_CONNECTIONS.set(self.live)

    def closed(self, address: str) -> None:
        self.live -= 1
        self.by_address[address] -= 1
        if not self.by_address[address]:
            del self.by_address[address]  # the table holds only addresses with open connections
        metrics.WEB_CONNECTIONS.set(self.live)


class GuardedRequestHandler(RequestHandler):
    __slots__ = ("_guard", "_watchdog", "_address")

    def __init__(self, guard: _Guard, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._watchdog: asyncio.TimerHandle | None = None
        self._address: str | None = None  # set while this connection is counted

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else str(peer)
        refusal = self._guard.refusal(address)
        if refusal:
            metrics.WEB_CONNECTIONS_REFUSED.labels(refusal).inc()
            transport.abort()
            return
        self._guard.opened(address)
        self._address = address
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self._address is not None:
            self._guard.closed(self._address)
            self._address = None
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages or self._request_in_progress:
            self._disarm()  # a complete head: the handler (and its own timeouts) take over
        elif self._watchdog is None:
            self._arm()  # bytes of a new head on an idle keep-alive connection

    def _arm(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(self._guard.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _too_slow(self) -> None:
        self._watchdog = None
        if not (self._messages or self._request_in_progress) and self.transport is not None:
            metrics.WEB_SLOW_CLIENTS_CLOSED.inc()
            self.transport.close()


class GuardedServer:
    """Wraps the ``web.Server`` an ``AppRunner`` made: same server, guarded handlers."""

    def __init__(self, inner: web.Server, guard: _Guard):
        self._inner = inner
        self._guard = guard

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self._guard, self._inner, loop=self._inner._loop,  # noqa: SLF001
                                     **self._inner._kwargs)  # noqa: SLF001


class GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, max_connections: int, header_timeout_s: float,
                 max_per_address: int | None = None, reserved: int = 0, **kwargs):
        super().__init__(app, **kwargs)
        self._guard = _Guard(max_connections, header_timeout_s, max_per_address, reserved)

    async def _make_server(self):
        return GuardedServer(await super()._make_server(), self._guard)
