"""The lookup API's routes on the worker's web server (``streams.serving.http`` makes it):

- ``POST /v1/pair-scores``: ``{"pairs": [{"item_a": .., "item_b": ..}, ...]}`` (or ``[[a, b], ...]``),
  at most ``lookup_max_pairs``; answered by ``Serving`` (``streams.serving.lookup``);
- ``GET /v1/items/{item_id}/partners?k=50``: the item's best partners in the live version.

Requests are checked by ``streams.serving.requests``; the bearer token by ``streams.serving.auth``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from aiohttp import web

from streams.core import metrics
from streams.core.config import Settings
from streams.serving.lookup import Serving
from streams.serving.requests import BadRequest, check_id, parse_pairs, partners_k

BULK_BODY_BYTES = 4096  # larger lookup bodies (~60+ pairs) take the bulk lane, one at a time


def _error(exc: BadRequest) -> web.Response:
    return web.json_response({"error": str(exc)}, status=exc.status)


def add_routes(app: web.Application, serving: Serving, settings: Settings) -> None:
    async def pair_scores(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            body = await asyncio.wait_for(request.read(), settings.web_header_timeout_s)
        except asyncio.TimeoutError:
            return web.json_response({"error": f"request body not received within "
                                               f"{settings.web_header_timeout_s:g}s"}, status=408)
        # large bodies parse, score and serialise one at a time, in chunks: a small request
        # then waits for one chunk of one bulk request, not for all of them
        lane = serving.bulk_lane if len(body) > BULK_BODY_BYTES else contextlib.nullcontext()
        try:
            async with lane:
                payload = await serving.answer_json(await parse_pairs(body, settings.lookup_max_pairs))
        except BadRequest as exc:
            return _error(exc)
        metrics.LOOKUP_SECONDS.labels(endpoint="pair_scores").observe(time.perf_counter() - started)
        return web.Response(body=payload, content_type="application/json")

    async def partners(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            item = check_id(request.match_info["item_id"], "item_id")
            k = partners_k(request.query.get("k", "50"))
        except BadRequest as exc:
            return _error(exc)
        snap = serving.current
        found = snap.index.partners(item, k)
        if found is None:
            return web.json_response({"error": f"no partners of {item!r} in the live score version",
                                      "score_version": snap.index.score_version}, status=404)
        metrics.LOOKUP_SECONDS.labels(endpoint="partners").observe(time.perf_counter() - started)
        return web.Response(body=orjson.dumps({
            "item_id": item, "model_version": snap.index.model_version,
            "score_version": snap.index.score_version, "partners": found}),
            content_type="application/json")

    app.router.add_post("/v1/pair-scores", pair_scores)
    app.router.add_get("/v1/items/{item_id}/partners", partners)


def add_item_rows_route(app: web.Application, storage) -> None:
    """``POST /internal/items`` ``{"items": [ids]}`` -> ``{"items": {id: catalogue row}}``: what a
    lookup process (``streams.serving.lookup_process``) asks for an item it must embed."""
    from streams.core.storage.items import products

    async def item_rows(request: web.Request) -> web.Response:
        try:
            ids = orjson.loads(await request.read())["items"]
            if not isinstance(ids, list) or len(ids) > 10_000:
                raise ValueError("items must be a list of at most 10000 ids")
            for item in ids:
                check_id(item, "item")
        except (ValueError, KeyError, TypeError, BadRequest) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        rows = await asyncio.to_thread(products, storage, ids)
        return web.Response(body=orjson.dumps({"items": rows}, default=str), content_type="application/json")

    app.router.add_post("/internal/items", item_rows)
