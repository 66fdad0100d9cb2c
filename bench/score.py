"""``pairstream bench score``: LLM labelling against a local OpenAI-compatible server.

The server (``models.fake_openai``) runs in a child process with a fixed latency per reply, so
the figures measure pairstream's side: prompt splitting, concurrency, the cache.

1. ``single_prompt_ms``: median latency of one prompt, called one at a time.
2. ``pair_ms``: median latency of one pair (five concurrent prompts), one pair at a time;
   ``split_latency_ratio`` = pair / single (goal <= 1.3: a pair costs about one prompt).
3. ``pairs_per_s``: N medium-tier pairs through the labeller in batches of 200, at most
   ``--concurrency`` prompts in flight; ``llm_calls`` counts the calls that reached the server.
4. ``llm_calls_second_run``: the same N pairs again (the cache: 0).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time

import orjson

from models.fake_openai import serve_in_process
from models.llm.base import DimensionRequest
from models.llm.guard import GuardedBackend
from models.llm.openai_backend import OpenAIBackend
from models.rubric import load_rubric
from models.scorer import PairScorer
from streams.core.config import Settings
from streams.core.storage.chdb_client import ChdbStorage
from streams.core.storage.migrations import migrate
from streams.dev.synthetic import generate
from streams.ingest.catalogue import Catalogue
from streams.labelling.labeller import Labeller

SAMPLES = 30


def _pairs(items, n: int, seed: int = 3) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        a, b = rng.sample(items, 2)
        if a.category != b.category:
            out.add(tuple(sorted((a.item_id, b.item_id))))
    return sorted(out)


async def _measure(url: str, storage, settings: Settings, pairs, products, concurrency: int) -> dict:
    rubric = load_rubric()
    backend = GuardedBackend(OpenAIBackend(url, "bench"), concurrency=concurrency, rate_per_s=0)
    scorer = PairScorer(rubric, backend)
    try:
        single = []
        for i in range(SAMPLES):
            a, b = products[pairs[i][0]], products[pairs[i][1]]
            request = DimensionRequest("brand", rubric.messages("brand", a, b), a, b)
            started = time.perf_counter()
            await backend.score(request)
            single.append(time.perf_counter() - started)
        per_pair = []
        for i in range(SAMPLES):
            a, b = products[pairs[i][0]], products[pairs[i][1]]
            started = time.perf_counter()
            await scorer.score(a, b)
            per_pair.append(time.perf_counter() - started)
        labeller = Labeller(settings, storage, scorer, producer=None)
        messages = [(f"{a}|{b}".encode(),
                     orjson.dumps({"item_a": a, "item_b": b, "tier": "medium", "count": 20}))
                    for a, b in pairs]
        calls_before = backend.calls
        started = time.perf_counter()
        labelled = 0
        for i in range(0, len(messages), 200):
            report = await labeller.handle(messages[i:i + 200])
            labelled += sum(report.labelled.values())
        seconds = time.perf_counter() - started
        calls = backend.calls - calls_before
        calls_before = backend.calls
        for i in range(0, len(messages), 200):
            await labeller.handle(messages[i:i + 200])
        second = backend.calls - calls_before
    finally:
        await backend.close()
    single_ms = statistics.median(single) * 1000
    pair_ms = statistics.median(per_pair) * 1000
    return {
        "pairs": len(pairs), "labelled": labelled, "seconds": round(seconds, 3),
        "pairs_per_s": round(len(pairs) / seconds, 1),
        "single_prompt_ms": round(single_ms, 2), "pair_ms": round(pair_ms, 2),
        "split_latency_ratio": round(pair_ms / single_ms, 3),
        "llm_calls": calls, "llm_calls_second_run": second,
    }


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="pairstream-bench-") as tmp, \
            serve_in_process(args.latency_ms) as url:
        settings = Settings(data_dir=tmp)
        storage = ChdbStorage(f"{tmp}/chdb", "bench")
        migrate(storage)
        items, _ = generate(max(500, args.pairs // 2), 10, 10, seed=1)
        Catalogue().upsert(storage, items)
        products = {i.item_id: {"item_id": i.item_id, "title": i.title, "category": i.category,
                                "brand": i.brand, "color": i.color, "condition": i.condition,
                                "model": i.model} for i in items}
        pairs = _pairs(items, max(args.pairs, SAMPLES))
        result = asyncio.run(_measure(url, storage, settings, pairs, products, args.concurrency))
        storage.close()
    result.update(latency_ms=args.latency_ms, concurrency=args.concurrency)
    print(f"one prompt {result['single_prompt_ms']:.1f} ms, one pair (5 prompts at once) "
          f"{result['pair_ms']:.1f} ms: split latency ratio {result['split_latency_ratio']:.2f}")
    print(f"{result['pairs']} pairs in {result['seconds']:.2f}s = {result['pairs_per_s']:.0f} pairs/s, "
          f"{result['llm_calls']} LLM calls; same pairs again: {result['llm_calls_second_run']} calls")
    return result
