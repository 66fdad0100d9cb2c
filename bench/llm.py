"""``pairstream bench llm``: a local causal LM labelling pairs through the ``hf`` backend.

What a worker with ``PAIRSTREAM_LLM_BACKEND=hf`` pays per pair: the rubric's five prompts, the
answers' distribution read off the model, through the guard (one prompt at a time) as
``streams.labelling.labeller.build_scorer`` sets it up. The model is Gemma 3 270M from the
``realllm`` extra unless ``--model`` names a model directory or ``.gguf`` file.

1. ``load_s``: loading the model (a GGUF is dequantised and its tokenizer converted).
2. ``whole_s_per_pair`` (the baseline): every prompt runs whole, and ``reuse_s_per_pair``
   (the default): each prompt runs only from where it differs from the previous one. Same
   pairs, same loaded model, in this order; ``speedup`` = whole / reuse.
3. ``tokens_per_pair``: prompt tokens the model ran per pair, each way.
The scores of the two ways must agree (``max_abs_score_delta``): reuse changes cost, not output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time

from models.llm.guard import GuardedBackend
from models.rubric import load_rubric
from models.scorer import PairScorer
from streams.dev.synthetic import generate


def _products(n: int, seed: int = 5) -> list[tuple[dict, dict]]:
    """``n`` random pairs of synthetic catalogue items (the prompts' length is what matters)."""
    import random

    items, _ = generate(max(60, 4 * n), 10, 10, seed=seed)
    rng = random.Random(seed)
    rows = [dataclasses.asdict(i) for i in items]
    pairs = []
    for _ in range(n):
        a, b = rng.sample(rows, 2)
        pairs.append((a, b))
    return pairs


async def _measure(backend, pairs) -> tuple[dict, dict]:
    """Per way: seconds and prompt tokens for ``pairs``, one pair at a time; and the scores."""
    from tqdm import tqdm

    scorer = PairScorer(load_rubric(), GuardedBackend(backend, timeout_s=600, concurrency=1, rate_per_s=0))
    await scorer.score(*pairs[0])  # warm-up: first-call allocations are nobody's cost
    result, scores = {}, {}
    for way, reuse in tqdm([("whole", False), ("reuse", True)], desc="bench llm", unit="way"):
        backend.prefix_reuse = reuse
        tokens, started = backend.tokens_run, time.perf_counter()
        scores[way] = [(await scorer.score(a, b)).score for a, b in pairs]
        result[f"{way}_s_per_pair"] = round((time.perf_counter() - started) / len(pairs), 3)
        result[f"{way}_tokens_per_pair"] = round((backend.tokens_run - tokens) / len(pairs), 1)
    return result, scores


def run(args) -> dict:
    from models.llm.hf_backend import HFBackend
    from models.local import gemma3_gguf

    with tempfile.TemporaryDirectory(prefix="pairstream-bench-llm-") as tmp:
        path = args.model or str(gemma3_gguf(tmp))
        started = time.perf_counter()
        backend = HFBackend(path)
        result: dict = {"model": path, "load_s": round(time.perf_counter() - started, 2),
                        "pairs": args.llm_pairs}
        measured, scores = asyncio.run(_measure(backend, _products(args.llm_pairs)))
        result.update(measured)
    result["speedup"] = round(result["whole_s_per_pair"] / result["reuse_s_per_pair"], 2)
    result["max_abs_score_delta"] = max(abs(x - y) for x, y in zip(scores["whole"], scores["reuse"]))
    print(f"{path}: loaded in {result['load_s']:.1f} s; per pair (5 prompts) whole "
          f"{result['whole_s_per_pair']:.2f} s ({result['whole_tokens_per_pair']:.0f} prompt tokens), with "
          f"prefix reuse {result['reuse_s_per_pair']:.2f} s ({result['reuse_tokens_per_pair']:.0f}): "
          f"{result['speedup']:.2f}x; scores differ by at most {result['max_abs_score_delta']:.2g}")
    return result
