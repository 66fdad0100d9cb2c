"""Who may read the worker's web server: one bearer token for everything it serves but probes.

``/status`` lists item ids and traffic, ``/metrics`` the same in numbers, and the lookup API
the scores themselves; only the liveness and readiness probes (which a kubelet or a load
balancer calls without credentials) stay open. A server bound beyond loopback without a token
would hand all of that to anyone on the network, so the settings refuse that combination
(``Settings.validate``).
"""

from __future__ import annotations

import hmac

from aiohttp import web

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def bearer_token(token: str, open_paths: frozenset[str] = OPEN_PATHS):
    """Middleware: every request outside ``open_paths`` needs ``Authorization: Bearer <token>``
    (401 otherwise); compared in constant time."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler):
        if request.path not in open_paths:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)
    return check
