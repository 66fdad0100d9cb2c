"""``pairstream bench memory``: does a real worker's memory stay flat while ids come and go?

A ``pairstream worker`` child process (the production entry point, with chDB in it) consumes
``--rounds`` waves of clicks from the embedded broker, on a marketplace whose listings churn:
every wave brings ``--users`` new users and ``--users / 2`` new listings (produced to
``items``; the previous wave's listings are deleted by tombstones), and its ``--events``
clicks go half to a stable catalogue of 5,000 items, 40% to the wave's listings and 10% to
item ids nobody listed (they are interned all the same). Each wave is two days later than the
one before, so the next wave's checkpoint evicts the previous wave's sessions; a last small
wave of 4,000 users two days on evicts the final one. The worker's resident set (``VmRSS``
of ``/proc/<pid>/status``: Linux) is read when it is ready and idle, and after each wave is
consumed and checkpointed.

Figures: ``rss_mb`` per step, ``growth`` = the largest RSS after waves 2.. over the RSS after
wave 1 (flat = 1.0; goal <= 1.2: ids that left every session must leave memory), and the
ingest's own count of interned ids after each wave (``pairstream_ingest_interned_ids``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

DAY = 86400.0
TICK_USERS = 4000  # the last wave: enough users ahead on every partition to evict the rest
EVENTS_KEY = 'pairstream_events_in_total{stage="ingest"}'
ITEMS_KEY = 'pairstream_events_in_total{stage="items"}'


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _metrics(base: str) -> dict[str, float]:
    """``name{labels}`` -> value of the worker's /metrics (the lines this bench reads)."""
    out = {}
    token = os.environ.get("PAIRSTREAM_API_TOKEN")  # the worker inherits it, and then guards /metrics
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=headers), timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("pairstream_events_in_total") or line.startswith("pairstream_ingest_interned_ids"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
    return out


def _wait(check, timeout: float, what: str, worker) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.returncode}) while waiting for {what}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def _wave(wave: int, users: int, events: int, stable: list[str], start: float, rng) -> list[tuple[bytes, bytes]]:
    """``events`` clicks of ``users`` new users over one hour from ``start`` (see the module
    docstring for where they go)."""
    out = []
    for k in range(events):
        user = f"w{wave}-u{rng.randrange(users)}"
        draw = rng.random()
        item = (rng.choice(stable) if draw < 0.5 else f"w{wave}-l{rng.randrange(users // 2)}" if draw < 0.9
                else f"w{wave}-unlisted{rng.randrange(users)}")
        ts = start + rng.uniform(0, 3600)
        out.append((user.encode(), json.dumps({"user_id": user, "item_id": item, "ts": ts,
                                               "event_id": f"w{wave}-{k}"}).encode()))
    return out


def _listings(wave: int, users: int) -> list[tuple[bytes, bytes | None]]:
    """The wave's new listings, and tombstones for the previous wave's."""
    from streams.core.events import Item

    new = [Item(f"w{wave}-l{k}", f"c{k % 40}", f"listing {k} of wave {wave}") for k in range(users // 2)]
    gone = [(f"w{wave - 1}-l{k}".encode(), None) for k in range(users // 2)] if wave else []
    return gone + [(item.item_id.encode(), item.to_json()) for item in new]


def run(args) -> dict:
    import asyncio
    import random

    from bench.ingest import _produce
    from streams.core.config import Settings
    from streams.core.embedded_broker import EmbeddedBroker, free_port
    from streams.core.events import Item
    from streams.core.topics import ensure_topics

    rng = random.Random(7)
    rounds, users, events = args.rounds, args.users, args.events
    with tempfile.TemporaryDirectory(prefix="pairstream-memory-") as tmp, EmbeddedBroker() as broker:
        settings = Settings(data_dir=tmp, topic_partitions=4, kafka_bootstrap=broker.bootstrap)
        ensure_topics(broker.bootstrap, settings)
        items = [Item(f"item{k}", f"c{k % 40}", f"item {k}") for k in range(5000)]
        asyncio.run(_produce(broker.bootstrap, settings.topic_items,
                             [(i.item_id.encode(), i.to_json()) for i in items]))
        port = free_port()
        env = dict(os.environ, PAIRSTREAM_KAFKA_BOOTSTRAP=broker.bootstrap, PAIRSTREAM_DATA_DIR=tmp,
                   PAIRSTREAM_WEB_PORT=str(port), PAIRSTREAM_TOPIC_PARTITIONS="4",
                   PAIRSTREAM_TRAINING_MIN_NEW_LABELS="1000000000", PAIRSTREAM_TRAINING_INTERVAL_S="0")
        log = open(f"{tmp}/worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        steps, interned, consumed, behind = [], [], 0, []
        try:
            _wait(lambda: urllib.request.urlopen(base + "/readyz", timeout=5).status == 200, 180,
                  "the worker to be ready", worker)
            time.sleep(3)
            steps.append(("idle", _rss_mb(worker.pid)))
            print(f"idle worker: {steps[-1][1]:.0f} MB")
            start = time.time() - (rounds + 2) * 2 * DAY
            ids, listed = [i.item_id for i in items], len(items)
            waves = [(w, users, events) for w in range(rounds)] + [(rounds, TICK_USERS, TICK_USERS)]
            for wave, n_users, n_events in waves:
                if wave < rounds:  # the listings first, in the catalogue before their clicks
                    listings = _listings(wave, n_users)
                    asyncio.run(_produce(broker.bootstrap, settings.topic_items, listings))
                    listed += len(listings)
                    try:  # the items agent is another consumer: give it a while, then go on
                        _wait(lambda total=listed: _metrics(base).get(ITEMS_KEY, 0) >= total, 120,
                              f"wave {wave}'s listings to be applied", worker)
                    except TimeoutError:
                        behind.append(wave)
                        print(f"wave {wave}: the items agent is still applying its listings; clicking anyway")
                clicks = _wave(wave, n_users, n_events, ids, start + wave * 2 * DAY, rng)
                asyncio.run(_produce(broker.bootstrap, settings.topic_clicks, clicks))
                consumed += len(clicks)
                _wait(lambda total=consumed: _metrics(base).get(EVENTS_KEY, 0) >= total,
                      600, f"wave {wave} to be consumed", worker)
                time.sleep(2 * settings.checkpoint_interval_s + 2)  # a checkpoint evicts and compacts
                name = "evicted" if wave == rounds else f"wave {wave + 1}"
                steps.append((name, _rss_mb(worker.pid)))
                seen = _metrics(base)
                interned.append({kind: int(seen.get(f'pairstream_ingest_interned_ids{{kind="{kind}"}}', -1))
                                 for kind in ("users", "items")})
                print(f"after {name}: {steps[-1][1]:.0f} MB; ingest holds {interned[-1]['users']} users, "
                      f"{interned[-1]['items']} interned items")
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
            log.close()
    after = [mb for name, mb in steps if name.startswith("wave")]
    growth = max(after[1:]) / after[0] if len(after) > 1 else 1.0
    print(f"growth after wave 1: {growth:.2f}x (goal <= 1.2)")
    return {"rounds": rounds, "users_per_round": users, "events_per_round": events,
            "rss_mb": {name: round(mb, 1) for name, mb in steps}, "growth": round(growth, 3),
            "interned": interned, "listings_not_applied_in_time": behind}
