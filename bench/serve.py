"""``pairstream bench serve``: the serving figures of the students and the lookup API.

All in one run, on the same inputs, so every ratio compares like with like:

1. students: MiniLM cross-encoder and two-tower, fine-tuned for one epoch on the generator's
   true compatibilities (so that int8's quality loss is measured on a model that has learnt
   something), exported with ``export_students`` like a training run does;
2. ``cross_onnx_vs_torch``: pairs/s of ONNX Runtime against torch eager, same pairs, batch 32,
   max 48 tokens;
3. ``cross_int8_vs_fp32``: dynamic int8 against fp32 ONNX, plus the quality delta (Spearman
   against the true scores of held-out pairs, and the largest score change);
4. ``two_tower_pairs_per_s``: a whole candidate set of 50 partners per item (every item
   embedded once, the pair head over every pair: what a publish does), against the
   cross-encoder's pairs/s; ``two_tower_head_pairs_per_s`` is the marginal rate once the
   embeddings exist (what the lookup API pays for an unpublished pair);
5. lookup latency: the worker's real aiohttp app with the published version in memory; a
   client in another process sends sequential keep-alive requests of 1, 10 and 100 pairs;
6. mixed load (``mixed_small_p99_ms``): the same 1-pair requests while 4 other client
   processes send 1000-pair requests back to back, against the 1-pair p99 alone (same run);
7. slowloris: 2000 connections from one address send half a request head and stall. While
   they are held, another address's 1-pair requests, each on a new connection
   (``during_idle_other_address_p99_ms``: the per-address cap keeps the port for it); once the
   worker's guarded server has shed them (refused past ``web_max_connections_per_address``,
   closed at ``web_header_timeout_s``, 2 s here) the 1-pair p99 (``after_idle_small_p99_ms``).

``--lookup-only`` runs 5 and 6 with tiny random students (seconds instead of minutes: the
published answers do not depend on the students).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import cast

import numpy as np

MIXED_CLIENTS = 4       # clients sending large requests back to back during the mixed phase
MIXED_BIG_PAIRS = 1000  # pairs per large request (the API's limit)
IDLE_CONNECTIONS = 2000  # half-sent connections of the slowloris phase


def _rate(fn, n_pairs: int, repeat: int = 2) -> float:
    fn()  # warm-up: allocations, thread pools
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_pairs / best


def _client(port: int, bodies: dict, n: int, out) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port)
    result = {}
    for size, body in bodies.items():
        times = []
        for i in range(n + 50):
            t = time.perf_counter()
            conn.request("POST", "/v1/pair-scores", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if i >= 50:  # warm-up requests are not counted
                times.append(time.perf_counter() - t)
            assert response.status == 200, response.status
        result[size] = times
    conn.close()
    out.put(result)


def _fresh_client(port: int, body: bytes, n: int, source: str, out) -> None:
    """``n`` 1-pair requests from address ``source``, each on a new connection (admission is
    what a connection flood from another address would take away)."""
    import http.client

    times = []
    for _ in range(n):
        t = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, source_address=(source, 0))
        conn.request("POST", "/v1/pair-scores", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 200, response.status
        times.append(time.perf_counter() - t)
    out.put(times)


def _big_client(port: int, body: bytes, stop, out) -> None:
    """Sends one large request after another until ``stop`` is set (the mixed load)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    while not stop.is_set():
        t = time.perf_counter()
        conn.request("POST", "/v1/pair-scores", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        times.append(time.perf_counter() - t)
    conn.close()
    out.put(times)


def _idle_opener(port: int, n: int, opened, closed_by_server, out) -> None:
    """Opens ``n`` connections that send half a request head and nothing more (slowloris),
    then reports how many the server closed (refused at once, or at its head deadline)."""
    import selectors
    import socket

    selector = selectors.DefaultSelector()  # epoll: past 1024 descriptors, unlike select()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/pair-scores HTTP/1.1\r\nHost: x\r\n")  # never finished
        selector.register(s, selectors.EVENT_READ)
        socks.append(s)
    opened.set()
    deadline = time.time() + 60
    closed = 0
    while closed < n and time.time() < deadline:
        for key, _ in selector.select(0.2):
            try:
                data = cast(socket.socket, key.fileobj).recv(4096)
            except OSError:  # reset by the server
                data = b""
            if not data:  # the server closed it
                selector.unregister(key.fileobj)
                closed += 1
    out.put(closed)
    closed_by_server.set()
    for s in socks:
        s.close()


def _students(tmp: Path, items, truth, max_length: int, backbone: str = "minilm"):
    from models.losses import DistillationLoss
    from models.onnx_export import export_students, quantize_int8
    from models.runtime import Students
    from models.text import item_text
    from training.dataset import PairExample, smoothed
    from training.students import train_student

    by_id = {i.item_id: asdict(i) for i in items}
    rows = [PairExample(t["item_a"], t["item_b"], item_text(by_id[t["item_a"]]), item_text(by_id[t["item_b"]]),
                        smoothed(t["score"]), float(t["score"]), 1.0, "train", "truth") for t in truth]
    targets = np.stack([r.target for r in rows])
    loss = DistillationLoss(0.5, 0.3, 0.2, 2.0)
    cross, tokenizer, _ = train_student("cross", rows, targets, backbone, loss, 1, 5e-5, 16, max_length)
    tower, _, _ = train_student("two_tower", rows, targets, backbone, loss, 1, 5e-5, 16, max_length)
    artifacts, _ = export_students(cross, tower, tokenizer, tmp / "students", max_length)
    artifacts["cross_encoder_int8"] = str(quantize_int8(Path(artifacts["cross_encoder"])))
    return cross, tokenizer, artifacts, Students("bench", artifacts), Students("bench", artifacts, int8=True)


def run(args) -> dict:
    import torch
    from scipy.stats import spearmanr

    from models.text import item_text
    from streams.dev.synthetic import generate, truth_pairs
    from training.batches import pair_inputs
    from training.dataset import PairExample

    max_length = 48
    items, clicks = generate(2000, 800, 40000, seed=11)
    truth = [t for t in truth_pairs(items, clicks) if t["cross_category"]]
    random.Random(11).shuffle(truth)
    train, test = truth[:600], truth[600:1112]
    by_id = {i.item_id: asdict(i) for i in items}
    texts = [(item_text(by_id[t["item_a"]]), item_text(by_id[t["item_b"]])) for t in test]
    if getattr(args, "lookup_only", False):
        with tempfile.TemporaryDirectory(prefix="pairstream-bench-") as lookup_tmp:
            print("lookup only: tiny random students (the table answers do not depend on them)")
            artifacts = _students(Path(lookup_tmp), items, train, max_length, "tiny")[2]
            result = _lookup(Path(lookup_tmp), items, clicks, artifacts, args.requests)
        _print_lookup(result)
        return result
    with tempfile.TemporaryDirectory(prefix="pairstream-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print("fine-tuning MiniLM students for one epoch (quality reference for int8)...")
        cross_torch, tokenizer, artifacts, fp32, int8 = _students(tmp, items, train, max_length)
        torch.set_num_threads(max(1, torch.get_num_threads()))
        uniform = np.full(10, 0.1, np.float32)  # no target: these rows are only scored
        examples = [PairExample("", "", a, b, uniform, None, 1.0, "test", "") for a, b in texts]

        @torch.inference_mode()
        def torch_scores():
            out = []
            for i in range(0, len(examples), 32):
                enc = pair_inputs(tokenizer, examples[i:i + 32], max_length)
                logits = cross_torch(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
                out.append(torch.softmax(logits, -1) @ torch.arange(1, 11, dtype=torch.float32))
            return torch.cat(out).numpy()

        n = len(texts)
        torch_rate = _rate(torch_scores, n)
        onnx_rate = _rate(lambda: fp32.cross.predict(texts, batch_size=32), n)
        int8_rate = _rate(lambda: int8.cross.predict(texts, batch_size=32), n)
        s_fp32, s_int8 = fp32.cross.predict(texts, 32), int8.cross.predict(texts, 32)
        labels = [t["score"] for t in test]
        print(f"cross-encoder pairs/s: torch {torch_rate:.0f}, ONNX fp32 {onnx_rate:.0f}, int8 {int8_rate:.0f}")

        # two-tower over a candidate set: every item embedded once, the head over every pair
        ids = [i.item_id for i in items]
        rng = np.random.default_rng(3)
        pairs = rng.integers(0, len(ids), (50 * len(ids), 2))  # 50 candidates per item
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        all_texts = [item_text(by_id[i]) for i in ids]

        def two_tower():
            emb = np.concatenate([fp32.two_tower.embed(all_texts[i:i + 256]) for i in range(0, len(ids), 256)])
            for i in range(0, len(pairs), 8192):
                fp32.two_tower.score_embeddings(emb[pairs[i:i + 8192, 0]], emb[pairs[i:i + 8192, 1]])
            return emb

        t = time.perf_counter()
        emb = two_tower()
        tt_seconds = time.perf_counter() - t
        tt_rate = len(pairs) / tt_seconds
        head_rate = _rate(lambda: [fp32.two_tower.score_embeddings(emb[pairs[i:i + 8192, 0]], emb[pairs[i:i + 8192, 1]])
                                   for i in range(0, len(pairs), 8192)], len(pairs))
        print(f"two-tower: {tt_rate:,.0f} pairs/s over {len(pairs)} pairs of {len(ids)} items "
              f"(head alone {head_rate:,.0f}/s) = {tt_rate / onnx_rate:.0f}x the cross-encoder")

        lookup = _lookup(tmp, items, clicks, artifacts, args.requests)
    result = {
        "cross_torch_pairs_per_s": round(torch_rate, 1),
        "cross_pairs_per_s": round(onnx_rate, 1),
        "cross_onnx_vs_torch": round(onnx_rate / torch_rate, 3),
        "cross_int8_pairs_per_s": round(int8_rate, 1),
        "cross_int8_vs_fp32": round(int8_rate / onnx_rate, 3),
        "cross_int8_spearman_vs_truth_delta": round(
            float(spearmanr(s_int8, labels)[0] - spearmanr(s_fp32, labels)[0]), 4),
        "cross_fp32_spearman_vs_truth": round(float(spearmanr(s_fp32, labels)[0]), 4),
        "cross_int8_max_abs_score_delta": round(float(np.abs(s_int8 - s_fp32).max()), 4),
        "two_tower_pairs_per_s": round(tt_rate),
        "two_tower_head_pairs_per_s": round(head_rate),
        "two_tower_vs_cross": round(tt_rate / onnx_rate, 1),
        "two_tower_candidate_set": {"items": len(ids), "pairs": int(len(pairs))},
        "provider": fp32.provider, "max_length": max_length, "batch": 32,
        **lookup,
    }
    _print_lookup(result)
    return result


def _print_lookup(result: dict) -> None:
    for size in (1, 10, 100):
        print(f"lookup {size:3d} pairs: p50 {result[f'lookup_{size}_p50_ms']:.2f} ms, "
              f"p99 {result[f'lookup_{size}_p99_ms']:.2f} ms")
    print(f"mixed load ({MIXED_CLIENTS} clients sending {MIXED_BIG_PAIRS}-pair requests): 1-pair "
          f"p50 {result['mixed_small_p50_ms']:.2f} ms, p99 {result['mixed_small_p99_ms']:.2f} ms "
          f"(alone p99 {result['lookup_1_p99_ms']:.2f} ms); {MIXED_BIG_PAIRS}-pair p50 "
          f"{result['mixed_big_p50_ms']:.1f} ms, {result['mixed_big_requests_per_s']:.0f} req/s")
    print(f"while one address holds {result['idle_connections']} half-sent connections: another "
          f"address's 1-pair requests, each on a new connection, p99 "
          f"{result['during_idle_other_address_p99_ms']:.2f} ms")
    print(f"after {result['idle_connections']} idle half-sent connections ({result['idle_closed_by_server']} "
          f"closed by the server): 1-pair p99 {result['after_idle_small_p99_ms']:.2f} ms")


def published_bench(tmp: Path, items, artifacts):
    """(storage, settings, published pairs): ~30k random pairs of ``items`` published in a chDB
    under ``tmp`` by the students ``artifacts`` (what the lookup figures answer from)."""
    import datetime as dt

    import pyarrow as pa

    from models.runtime import Students
    from streams.core.config import Settings
    from streams.core.storage import registry
    from streams.core.storage.chdb_client import ChdbStorage
    from streams.core.storage.migrations import migrate
    from streams.core.storage.scores import live
    from streams.ingest.catalogue import Catalogue
    from streams.publishing.publisher import publish

    storage = ChdbStorage(tmp / "chdb", "bench")
    migrate(storage)
    settings = Settings(data_dir=str(tmp), publish_cross_budget_s=10.0,
                        web_header_timeout_s=2.0)  # the slowloris phase waits for this deadline
    Catalogue().upsert(storage, items)
    rng = np.random.default_rng(5)
    ids = [i.item_id for i in items]
    raw = rng.integers(0, len(ids), (30_000, 2))
    pairs = sorted({(min(ids[a], ids[b]), max(ids[a], ids[b])) for a, b in raw if a != b})
    storage.insert_arrow("pair_counts", pa.table({
        "item_a": [a for a, _ in pairs], "item_b": [b for _, b in pairs],
        "day": pa.array([dt.date(2026, 6, 1)] * len(pairs)), "count": pa.array([5] * len(pairs), pa.uint64())}))
    registry.promote(storage, "bench", {}, artifacts, time.time())
    publish(storage, settings, Students("bench", artifacts), progress=False)
    assert live(storage)
    return storage, settings, pairs


def _lookup(tmp: Path, items, clicks, artifacts, n_requests: int) -> dict:
    import asyncio

    import orjson
    from aiohttp import web

    from streams.core.embedded_broker import free_port
    from streams.serving.http import serve_with_settings
    from streams.serving.lookup import Serving
    from streams.serving.routes import add_routes

    storage, settings, pairs = published_bench(tmp, items, artifacts)
    rng = np.random.default_rng(5)
    bodies = {}
    for size in (1, 10, 100):
        chosen = [list(pairs[int(k)]) for k in rng.integers(0, len(pairs), size)]
        bodies[size] = orjson.dumps({"pairs": chosen})
    big = orjson.dumps({"pairs": [list(pairs[int(k)]) for k in rng.integers(0, len(pairs), MIXED_BIG_PAIRS)]})

    port = free_port()

    async def serve():
        serving = Serving(storage, settings)
        await serving.reload()
        app = web.Application()
        add_routes(app, serving, settings)
        # the worker's own guarded server: connection limits, head deadline, keep-alive
        runner = await serve_with_settings(app, settings.replace(web_port=port))
        ctx = mp.get_context("fork")
        try:
            alone = await _collect(_client, (port, bodies, n_requests))
            # mixed: large requests in flight all the time while one client sends 1-pair ones
            stop = ctx.Event()
            big_queue = ctx.Queue()
            bigs = [ctx.Process(target=_big_client, args=(port, big, stop, big_queue))
                    for _ in range(MIXED_CLIENTS)]
            for p in bigs:
                p.start()
            await asyncio.sleep(0.5)  # the large requests are flowing
            started = time.perf_counter()
            mixed = await _collect(_client, (port, {1: bodies[1]}, n_requests))
            elapsed = time.perf_counter() - started
            stop.set()
            big_times = []
            for _ in bigs:
                while True:
                    try:
                        big_times += big_queue.get_nowait()
                        break
                    except Exception:  # noqa: BLE001 - queue.Empty: still finishing a request
                        await asyncio.sleep(0.05)
            for p in bigs:
                p.join(10)
            # slowloris: idle half-sent connections; once the server has shed them (refused
            # past the limit, closed at the head deadline) lookups must be as fast as before
            opened, shed, idle_queue = ctx.Event(), ctx.Event(), ctx.Queue()
            opener = ctx.Process(target=_idle_opener, args=(port, IDLE_CONNECTIONS, opened, shed, idle_queue))
            opener.start()
            while not opened.is_set():
                if not opener.is_alive() and opener.exitcode:
                    raise RuntimeError(f"idle connection opener failed with {opener.exitcode}")
                await asyncio.sleep(0.01)
            during = await _collect(_fresh_client, (port, bodies[1], 300, "127.0.0.2"))
            while not shed.is_set():
                if not opener.is_alive() and opener.exitcode:
                    raise RuntimeError(f"idle connection opener failed with {opener.exitcode}")
                await asyncio.sleep(0.05)
            idle_closed = await asyncio.to_thread(idle_queue.get, True, 30)
            opener.join(10)
            after = await _collect(_client, (port, {1: bodies[1]}, n_requests))
            return alone, mixed[1], big_times, elapsed, idle_closed, after[1], during
        finally:
            await runner.cleanup()

    async def _collect(target, args):
        """Runs a client process while this loop serves it; returns what it puts."""
        queue = mp.get_context("fork").Queue()
        client = mp.get_context("fork").Process(target=target, args=(*args, queue))
        client.start()
        try:
            while True:
                try:
                    return queue.get_nowait()
                except Exception:  # noqa: BLE001 - queue.Empty: the client is still running
                    if not client.is_alive() and client.exitcode:
                        raise RuntimeError(f"lookup client failed with {client.exitcode}") from None
                    await asyncio.sleep(0.05)
        finally:
            client.join(10)

    print(f"lookup: {len(pairs)} published pairs in memory; {n_requests} requests per size")
    latencies, mixed, big_times, elapsed, idle_closed, after_idle, during_idle = asyncio.run(serve())
    storage.close()
    out: dict[str, float] = {"lookup_requests_per_size": n_requests, "lookup_published_pairs": len(pairs)}
    for size, times in latencies.items():
        ms = np.array(times) * 1000
        out[f"lookup_{size}_p50_ms"] = round(float(np.percentile(ms, 50)), 3)
        out[f"lookup_{size}_p99_ms"] = round(float(np.percentile(ms, 99)), 3)
    ms = np.array(mixed) * 1000
    out["mixed_small_p50_ms"] = round(float(np.percentile(ms, 50)), 3)
    out["mixed_small_p99_ms"] = round(float(np.percentile(ms, 99)), 3)
    out["mixed_small_max_ms"] = round(float(ms.max()), 3)
    out["mixed_small_p99_vs_alone"] = round(out["mixed_small_p99_ms"] / out["lookup_1_p99_ms"], 2)
    out["mixed_big_p50_ms"] = round(float(np.percentile(np.array(big_times) * 1000, 50)), 2)
    out["mixed_big_requests_per_s"] = round(len(big_times) / elapsed, 1)
    out["mixed_clients"], out["mixed_big_pairs"] = MIXED_CLIENTS, MIXED_BIG_PAIRS
    out["idle_connections"], out["idle_closed_by_server"] = IDLE_CONNECTIONS, idle_closed
    out["after_idle_small_p99_ms"] = round(float(np.percentile(np.array(after_idle) * 1000, 99)), 3)
    out["during_idle_other_address_p99_ms"] = round(float(np.percentile(np.array(during_idle) * 1000, 99)), 3)
    return out
