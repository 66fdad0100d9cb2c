"""``GET /status``: one HTML page that answers "does this worker keep up?" without Grafana.

For the on-call engineer who has only a browser and the worker's address: the lag table with
its Burrow statuses (as the worker last sampled it), how old each table's newest row is, what
the lookup API serves (score and model version), dead letters by reason since the worker
started, events per stage, and the pairs that most recently became frequent. Plain HTML, no
JavaScript; it reloads itself every 15 s. Everything shown is text from the worker's own
state and metrics, escaped (product ids are data, never markup).
"""

from __future__ import annotations

import asyncio
import html
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

from streams.core import metrics
from streams.core.records import publish_summary_line
from streams.core.storage import Storage, scores, tiers
from streams.ops.lag import STATUS_CODES
from streams.ops.sampling import scores_behaviour_through


@dataclass
class StatusData:
    """What the page shows; gathered off the event loop, rendered by :func:`render`."""

    lag: list[dict]
    freshness: dict[str, float]          # table -> unix time of its newest row
    score_version: str | None
    model_version: str | None
    published_pairs: int
    dead_letters: dict[tuple[str, str], float]  # (topic, reason) -> count since start
    events: dict[str, float]             # stage -> events since start
    newly_frequent: list[dict] = field(default_factory=list)
    now: float = field(default_factory=time.time)
    behaviour_through: float | None = None  # clicks up to here are in the live published scores
    publish_summary: dict | None = None  # what the live version's publish decided


def _samples(metric, suffix: str = "") -> list:
    return [s for family in metric.collect() for s in family.samples
            if not suffix or s.name.endswith(suffix)]


def gather(storage: Storage, versions: Callable[[], tuple[str | None, str | None, int]],
           lag_rows: Callable[[], list[dict]], limit: int = 15) -> StatusData:
    """The worker's state now (runs ClickHouse queries: call it in a thread). ``versions``:
    (score version, model version, published pairs) the lookup API serves."""
    score_version, model_version, published = versions()
    return StatusData(
        lag=list(lag_rows()),
        freshness={s.labels["table"]: s.value for s in _samples(metrics.TABLE_NEWEST)},
        score_version=score_version, model_version=model_version, published_pairs=published,
        dead_letters={(s.labels["topic"], s.labels["reason"]): s.value
                      for s in _samples(metrics.DLQ, "_total")},
        events={s.labels["stage"]: s.value for s in _samples(metrics.EVENTS_IN, "_total")},
        newly_frequent=tiers.newest(storage, limit),
        behaviour_through=scores_behaviour_through(storage) if score_version else None,
        publish_summary=scores.summary(storage, score_version) if score_version else None)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _table(headers: list[str], rows: list[list], empty: str) -> str:
    if not rows:
        return f"<p class=empty>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell if isinstance(cell, _Raw) else f"<td>{html.escape(str(cell))}</td>"
                                    for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Raw(str):
    """A cell already rendered (and escaped) by this module."""


def _status_cell(status: str) -> _Raw:
    return _Raw(f"<td class='status {html.escape(status.lower())}'>{html.escape(status)}</td>")


def render(data: StatusData) -> str:
    lag = _table(["group", "topic", "partition", "lag (messages)", "lag (seconds)", "msg/s", "status"],
                 [[r["group"], r["topic"], r["partition"], r["lag"],
                   "-" if r["lag_seconds"] is None else f"{r['lag_seconds']:.1f}",
                   r["rate_per_s"], _status_cell(r["status"])] for r in data.lag],
                 "no lag sample yet (the worker samples every PAIRSTREAM_LAG_SAMPLE_S)")
    fresh = _table(["table", "newest row", "age"],
                   [[t, _utc(v), _age(data.now - v)]
                    for t, v in sorted(data.freshness.items())], "no table has rows yet")
    dead = _table(["topic", "reason", "messages"],
                  [[t, r, f"{n:.0f}"] for (t, r), n in sorted(data.dead_letters.items(), key=lambda x: -x[1])],
                  "no dead letters since the worker started")
    events = _table(["stage", "events"], [[s, f"{n:.0f}"] for s, n in sorted(data.events.items())],
                    "no events yet")
    pairs = _table(["item a", "item b", "tier", "count", "routed"],
                   [[p["item_a"], p["item_b"], p["tier"], p["count"], _age(data.now - p["routed_at"]) + " ago"]
                    for p in data.newly_frequent], "no pair has become frequent yet")
    worst = max((r["status"] for r in data.lag), key=STATUS_CODES.__getitem__, default="OK")
    version = (f"score version <b>{html.escape(data.score_version)}</b>, model "
               f"<b>{html.escape(data.model_version or '-')}</b>, {data.published_pairs:,} pairs in memory"
               if data.score_version else "nothing published yet: the lookup API answers from the model or not at all")
    if data.score_version and data.behaviour_through:
        version += (f"; the published scores reflect clicks up to {_utc(data.behaviour_through)} "
                    f"(<b id=staleness>{_age(max(data.now - data.behaviour_through, 0))}</b> behind: "
                    f"changed pairs are refreshed every PAIRSTREAM_PUBLISH_REFRESH_S)")
    if data.publish_summary:
        version += f"<br>its publish: {html.escape(publish_summary_line(data.publish_summary))}"
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=15>
<title>pairstream worker: {html.escape(worst)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222 }}
table {{ border-collapse: collapse; margin-bottom: 1.2em }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left }}
th {{ background: #f3f3f3 }}
.status.ok {{ background: #cfc }} .status.warn {{ background: #ffc }}
.status.stall, .status.stop, .status.rewind {{ background: #fcc }}
.empty {{ color: #777 }}
</style></head><body>
<h1>pairstream worker</h1>
<p id=overall>Overall: <b>{html.escape(worst)}</b> &middot; {_utc(data.now)}</p>
<h2>Consumer lag</h2><div id=lag>{lag}</div>
<h2>Table freshness</h2><div id=freshness>{fresh}</div>
<h2>Serving</h2><p id=serving>{version}</p>
<h2>Dead letters by reason</h2><div id=dead-letters>{dead}</div>
<h2>Events per stage</h2><div id=events>{events}</div>
<h2>Newly frequent pairs</h2><div id=newly-frequent>{pairs}</div>
<p><a href="/metrics">/metrics</a> &middot; <a href="/readyz">/readyz</a></p>
</body></html>"""


def add_status_route(app: web.Application, storage: Storage,
                     versions: Callable[[], tuple[str | None, str | None, int]],
                     lag_rows: Callable[[], list[dict]]) -> None:
    async def status(_request: web.Request) -> web.Response:
        data = await asyncio.to_thread(gather, storage, versions, lag_rows)
        return web.Response(text=render(data), content_type="text/html")

    app.router.add_get("/status", status)
