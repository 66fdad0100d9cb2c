"""``pairstream bench freshness``: how long after a click does the re-ranker's table show it?

A ``pairstream worker`` child process with its default settings (the product as people run it:
its own training trigger, fast first run, publish and refresh timers) on the embedded broker.
Two phases of clicks at ``--fresh-rate`` (default 10k/s), each stamped with its send time: the
marketplace generator's ``--events`` clicks (``--items``, ``--users``; the issue's scale is
200,000) once, then nothing until the first score version is out (the worker trains on them),
then a steady stream at the same rate for the probe window (the sessions again, in cycles with
new user ids). Why not steady from the start: at 10k/s for the 5-8 minutes a first version
takes here, 3-5M clicks on 3,000 items, the publish's full statistics refresh (Swing's user
pairs) ran past 4 minutes and 13 GB: a limit of its own (see docs/serving.md), not what this
bench measures.

Probes measure staleness without reading anything the worker could not publish: ``--probes``
pairs of two items that only the bench's probe users click (their own listings, one of a
device category and one of an accessory category). Once the first version is out, every
probe pair gets one probe session (a new user clicks both items) every ``PROBE_EVERY_S``; the
k-th session makes the pair's co-click count k. A pair is a candidate from the low tier (3) on:
for each probe session with k >= 3 the bench polls the lookup API until the pair's published
``evidence.count`` is at least k, and the staleness is that moment minus the session's send
time (the first of them is the "newly at the low tier" path, the rest the "changed" path).

Figures:
- ``first_publish_s``: first click offered -> the lookup API answers from a score version;
- ``first_model``: the first run's held-out metrics (``runs/*/result.json``: Spearman of each
  student against the labels), to set against a full run's;
- ``staleness_p50_s`` / ``staleness_p99_s`` over the probe sessions;
- ``changed_pairs_per_s``: pairs the refreshes wrote per second of the probe window (worker metrics);
- ``refresh_wall_share``: seconds spent in refreshes per second of the window (wall time of the
  refresh thread, which overlaps the ingest: an upper bound of publishing's share of one core);
- ``worker_cpu_cores``: the worker's CPU seconds per second over the window (training included);
- ``--standins-nice N``: the broker and the click producer, stand-ins for hosts of their own in
  production, run N nicer than the bench (``bench serve --busy``: 5, the worker's own niceness
  beside its lookup processes; 0 here unless asked);
- ``lookup_poll_p50_ms`` / ``_p99_ms``: the probe pairs' lookups, asked of the lookup processes
  (``PAIRSTREAM_LOOKUP_PORT``: what a re-ranker calls) as every other lookup of this bench;
- ``offered_per_s`` / ``consumed_per_s``: the click rate asked and the one the worker kept up.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

PROBE_EVERY_S = 4.0
EVENTS_KEY = 'pairstream_events_in_total{stage="ingest"}'


def _get(base: str, path: str, body: bytes | None = None, timeout: float = 5) -> dict:
    token = os.environ.get("PAIRSTREAM_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base + path, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if path != "/metrics" else {"text": raw.decode()}


def _metric_sum(base: str, prefix: str) -> float:
    text = _get(base, "/metrics")["text"]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix) and not line.startswith("#"))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / ticks  # self + children


class Offer(threading.Thread):
    """Produces the marketplace clicks at ``rate``/s, cycle after cycle with new user ids, each
    stamped with its send time, in per-partition batches every ``TICK_S`` (aiokafka's
    ``send_batch``: a per-message ``send`` in Python took half a core of the two at 10k/s, which
    the worker under test then lacked); probe sessions go out with the next batch (``probe``)."""

    TICK_S = 0.02

    def __init__(self, bootstrap: str, topic: str, clicks, rate: float, nice: int = 0):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.clicks, self.rate = bootstrap, topic, clicks, rate
        self.nice = nice
        self.sent = 0
        self.limit: int | None = len(clicks)  # the load phase: one pass; None = steady, unbounded
        self.stop = threading.Event()
        self.probes: queue.Queue = queue.Queue()

    def steady(self) -> None:
        """From now on, clicks at ``rate`` without end (cycles with new user ids)."""
        self.limit = None
        self._restart = True

    def probe(self, user: str, items: tuple[str, str]) -> float:
        """One probe session; returns the time its batch was acknowledged (the clicks are in the log)."""
        done: queue.Queue = queue.Queue(maxsize=1)
        self.probes.put((user, items, done))
        return done.get(timeout=30)

    def run(self) -> None:
        if self.nice:  # a stand-in for the event pipeline's own hosts (``--standins-nice``)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        asyncio.run(self._run())

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        from streams.core.produce import send_batched

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, max_batch_size=512 * 1024)
        await producer.start()
        started, cycle, k, base = time.monotonic(), 0, 0, 0
        self._restart = False
        clicks = self.clicks
        try:
            while not self.stop.is_set():
                if self._restart:  # the steady phase: the rate counts from now
                    started, base, self._restart = time.monotonic(), self.sent, False
                due = int((time.monotonic() - started) * self.rate) - (self.sent - base)
                if self.limit is not None:
                    due = min(due, self.limit - self.sent)
                now = time.time()
                records = []
                for _ in range(max(due, 0)):
                    click = clicks[k]
                    user = f"{click.user_id}-c{cycle}"
                    records.append((user.encode(), (
                        f'{{"event_id":"{click.event_id}-c{cycle}","user_id":"{user}",'
                        f'"item_id":"{click.item_id}","ts":{now:.3f}}}').encode(), None))
                    k += 1
                    if k == len(clicks):
                        k, cycle = 0, cycle + 1
                waiting = []
                while not self.probes.empty():
                    user, (a, b), done = self.probes.get()
                    waiting.append(done)
                    for n, item in enumerate((a, b)):
                        records.append((user.encode(), (f'{{"event_id":"{user}-{n}","user_id":"{user}",'
                                                        f'"item_id":"{item}","ts":{now:.3f}}}').encode(), None))
                if records:
                    await send_batched(producer, self.topic, records)
                    self.sent += max(due, 0)
                acked = time.time()
                for done in waiting:
                    done.put(acked)
                await asyncio.sleep(self.TICK_S)
        finally:
            await producer.stop()


def _published_pairs(lookups: str, items: list[str], per_item: int = 5) -> list[list[str]]:
    """Published pairs of ``items`` (their best partners), as a re-ranker's candidates are."""
    pairs = []
    for item in items:
        try:
            found = _get(lookups, f"/v1/items/{item}/partners?k={per_item}")
        except OSError:  # 404: an item without published partners
            continue
        pairs += [[item, p["item_id"]] for p in found["partners"]]
    return pairs


def _first_model(data_dir: str) -> dict:
    """The first training run's held-out figures, from its result file."""
    from pathlib import Path

    results = sorted(Path(data_dir, "runs").glob("*/result.json"))
    if not results:
        return {}
    result = json.loads(results[0].read_text())
    metrics = result.get("metrics", {})
    return {"minutes": result.get("minutes"), "n_train": metrics.get("n_train"), "n_test": metrics.get("n_test"),
            **{f"{kind}_spearman_vs_labels": round(metrics.get(kind, {}).get("spearman_vs_labels", float("nan")), 3)
               for kind in ("cross", "two_tower")}}


def run(args, load=None) -> dict:
    """``load``: an object whose ``start(lookups, worker, pairs)`` runs beside the probe window
    (``lookups``/``worker``: base URLs; ``pairs``: published pairs to ask for) and whose
    ``finish()`` returns figures for the result (``bench serve --busy``)."""
    from bench.ingest import _produce
    from streams.core.config import Settings
    from streams.core.embedded_broker import EmbeddedBroker, free_port
    from streams.core.events import Item
    from streams.core.topics import ensure_topics
    from streams.dev.marketplace import generate

    rate, window = args.fresh_rate, args.window
    items, clicks, _truth = generate(args.items, args.users, args.events, seed=args.seed)
    by_category: dict[str, list[Item]] = {}
    for item in items:
        by_category.setdefault(item.category, []).append(item)
    categories = sorted(by_category)
    rng = random.Random(5)
    probes = []
    for k in range(args.probes):  # two listings only probe users click, of two categories
        first, second = rng.sample(categories, 2)
        probes.append((Item(f"probe{k:03d}a", first, f"probe listing {k} a"),
                       Item(f"probe{k:03d}b", second, f"probe listing {k} b")))
    with tempfile.TemporaryDirectory(prefix="pairstream-freshness-") as tmp, EmbeddedBroker() as broker:
        standins_nice = getattr(args, "standins_nice", None) or 0
        if standins_nice:  # the broker stands in for a Kafka cluster on hosts of its own
            from streams.core.lifeline import lower_own_priority

            lower_own_priority(standins_nice, broker.pid)
        settings = Settings(data_dir=tmp, kafka_bootstrap=broker.bootstrap)
        ensure_topics(broker.bootstrap, settings)
        catalogue = items + [x for pair in probes for x in pair]
        asyncio.run(_produce(broker.bootstrap, settings.topic_items,
                             [(i.item_id.encode(), i.to_json()) for i in catalogue]))
        port, lookup_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAIRSTREAM_") or k == "PAIRSTREAM_API_TOKEN"}
        env.update(PAIRSTREAM_KAFKA_BOOTSTRAP=broker.bootstrap, PAIRSTREAM_DATA_DIR=tmp,
                   PAIRSTREAM_WEB_PORT=str(port), PAIRSTREAM_LOOKUP_PORT=str(lookup_port),
                   PAIRSTREAM_LOG_LEVEL="INFO")
        if standins_nice:  # the worker's host is its own: it yields to its lookup processes
            env["PAIRSTREAM_WORKER_NICE"] = str(standins_nice)
        log_path = os.path.join(tempfile.gettempdir(), "pairstream-bench-freshness-worker.log")
        print(f"worker log: {log_path}")
        log = open(log_path, "wb")
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"  # the worker: metrics
        lookups = f"http://127.0.0.1:{lookup_port}"  # the lookup processes: what a re-ranker asks
        offer = Offer(broker.bootstrap, settings.topic_clicks, clicks, rate, standins_nice)
        samples: list[float] = []
        result: dict = {}
        try:
            deadline = time.monotonic() + 180
            while True:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the worker did not get ready:\n" + open(log_path).read()[-3000:])
                try:
                    if urllib.request.urlopen(base + "/readyz", timeout=5).status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            pairs_body = json.dumps({"pairs": [[a.item_id, b.item_id] for a, b in probes]}).encode()
            t0 = time.time()
            offer.start()
            print(f"offering {len(clicks)} clicks at {rate:.0f}/s; then waiting for the first score version")
            def published_version() -> str | None:
                try:
                    return _get(lookups, "/v1/pair-scores", pairs_body, timeout=30).get("score_version")
                except OSError:
                    return None

            while published_version() is None:
                if worker.poll() is not None or time.time() - t0 > args.first_timeout:
                    raise RuntimeError(f"no score version within {args.first_timeout:.0f}s:\n"
                                       + open(log_path).read()[-3000:])
                time.sleep(1.0)
            first_publish = time.time() - t0
            print(f"first score version after {first_publish:.1f}s; offering {rate:.0f} clicks/s "
                  f"and probing for {window:.0f}s")
            offer.steady()
            if load is not None:
                load.start(lookups, base, _published_pairs(lookups, [i.item_id for i in items[:400]]))
            refreshed_pairs0 = _metric_sum(base, "pairstream_publish_refresh_pairs_total{")
            refresh_s0 = _metric_sum(base, "pairstream_publish_refresh_seconds_sum")
            cpu0, w0 = _cpu_seconds(worker.pid), time.time()
            consumed0, sent0 = _metric_sum(base, EVENTS_KEY), offer.sent
            sessions = [0] * len(probes)
            pending: list[tuple[int, int, float]] = []  # (probe, count it makes, sent at)
            poll_s: list[float] = []  # how long each lookup of the probe pairs took
            poll_errors: list[str] = []
            next_probe = [w0 + k * PROBE_EVERY_S / len(probes) for k in range(len(probes))]
            while time.time() - w0 < window or pending:
                now = time.time()
                if now - w0 > window + 120:
                    print(f"{len(pending)} probe sessions never showed within 120 s of the window's end")
                    break
                for k, (a, b) in enumerate(probes):
                    if now - w0 < window and now >= next_probe[k]:
                        sessions[k] += 1
                        sent = offer.probe(f"probe-user-{k}-{sessions[k]}", (a.item_id, b.item_id))
                        if sessions[k] >= settings.tier_low:
                            pending.append((k, sessions[k], sent))
                        next_probe[k] += PROBE_EVERY_S
                asked = time.time()
                try:
                    answer = _get(lookups, "/v1/pair-scores", pairs_body, timeout=30)["results"]
                except OSError as exc:  # TimeoutError included: counted, and the next poll goes on
                    poll_errors.append(f"{type(exc).__name__} after {time.time() - asked:.1f}s")
                    continue
                seen = time.time()
                poll_s.append(seen - asked)
                published = [r["evidence"].get("count", 0) if r["source"] == "table" else 0 for r in answer]
                still = []
                for k, count, sent in pending:
                    if published[k] >= count:
                        samples.append(seen - sent)
                    else:
                        still.append((k, count, sent))
                pending = still
                time.sleep(0.25)
            elapsed = time.time() - w0
            loaded = load.finish() if load is not None else {}
            cpu = _cpu_seconds(worker.pid) - cpu0
            changed = _metric_sum(base, "pairstream_publish_refresh_pairs_total{") - refreshed_pairs0
            refresh_s = _metric_sum(base, "pairstream_publish_refresh_seconds_sum") - refresh_s0
            consumed = _metric_sum(base, EVENTS_KEY) - consumed0
            offered = offer.sent - sent0
            result = {
                "offered_per_s": round(offered / elapsed, 1), "consumed_per_s": round(consumed / elapsed, 1),
                "first_publish_s": round(first_publish, 1),
                "staleness_p50_s": round(float(np.percentile(samples, 50)), 2) if samples else None,
                "staleness_p99_s": round(float(np.percentile(samples, 99)), 2) if samples else None,
                "staleness_max_s": round(max(samples), 2) if samples else None,
                "staleness_samples": len(samples), "probe_sessions_unseen": len(pending),
                "changed_pairs_per_s": round(changed / elapsed, 1),
                "refresh_wall_share": round(refresh_s / elapsed, 3),
                "lookup_poll_p50_ms": round(float(np.percentile(poll_s, 50)) * 1000, 1) if poll_s else None,
                "lookup_poll_p99_ms": round(float(np.percentile(poll_s, 99)) * 1000, 1) if poll_s else None,
                "lookup_poll_errors": poll_errors[:10],
                "worker_cpu_cores": round(cpu / elapsed, 2), "window_s": round(elapsed, 1),
                "items": args.items, "events_per_cycle": len(clicks),
                "first_model": _first_model(tmp), **loaded,
            }
        finally:
            offer.stop.set()
            offer.join(timeout=30)
            worker.terminate()
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
            log.close()
    for name, value in result.items():
        print(f"{name:>24}: {value}")
    return result
