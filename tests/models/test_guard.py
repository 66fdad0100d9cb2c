"""Retries, limits and the circuit breaker around a real HTTP backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from models.fake_openai import FakeLLM, serve
from models.llm.base import DimensionRequest, TransientError
from models.llm.guard import CircuitBreaker, CircuitOpen, GuardedBackend, TokenBucket
from models.llm.openai_backend import OpenAIBackend
from models.rubric import load_rubric

REQUEST = DimensionRequest("brand", load_rubric().messages("brand", {"title": "a"}, {"title": "b"}), {}, {})


def _run(coro):
    return asyncio.run(coro)


def _score_once(guard):
    async def go():
        try:
            return await guard.score(REQUEST)
        finally:
            await guard.close()

    return _run(go())


def test_transient_errors_are_retried_with_backoff():
    with serve(FakeLLM(fail_first=2)) as (url, llm):
        guard = GuardedBackend(OpenAIBackend(url, "m"), retries=3, backoff_s=0.05)
        reply = _score_once(guard)
    assert 1 <= reply.score <= 10 and llm.requests == 3


def test_gives_up_after_the_retries():
    with serve(FakeLLM(fail_first=100)) as (url, llm):
        guard = GuardedBackend(OpenAIBackend(url, "m"), retries=2, backoff_s=0.01,
                               breaker=CircuitBreaker(failure_threshold=50))
        with pytest.raises(TransientError):
            _score_once(guard)
    assert llm.requests == 3


def test_timeout_counts_as_transient():
    with serve(FakeLLM(latency_ms=400)) as (url, llm):
        guard = GuardedBackend(OpenAIBackend(url, "m"), retries=0, timeout_s=0.1)
        with pytest.raises(TransientError, match="timed out"):
            _score_once(guard)


def test_concurrency_limit_and_rate_limit():
    with serve(FakeLLM(latency_ms=100)) as (url, llm):
        limited = GuardedBackend(OpenAIBackend(url, "m"), concurrency=2, rate_per_s=0)

        async def go(guard, n):
            started = time.perf_counter()
            await asyncio.gather(*(guard.score(REQUEST) for _ in range(n)))
            await guard.close()
            return time.perf_counter() - started

        # 6 calls of 100 ms, 2 at a time: at least 3 rounds
        assert _run(go(limited, 6)) >= 0.3
    bucket = TokenBucket(rate=20, burst=1)

    async def take(n):
        started = time.perf_counter()
        for _ in range(n):
            await bucket.acquire()
        return time.perf_counter() - started

    assert _run(take(5)) >= 4 / 20 * 0.9  # 1 burst token, then 20/s


def test_breaker_opens_and_fails_fast():
    with serve(FakeLLM()) as (url, llm):
        llm.down = True
        breaker = CircuitBreaker(failure_threshold=2, cooldown_s=30)
        guard = GuardedBackend(OpenAIBackend(url, "m"), retries=5, backoff_s=0.01, breaker=breaker)

        async def go():
            try:
                with pytest.raises(TransientError):
                    await guard.score(REQUEST)
                before = llm.requests
                with pytest.raises(CircuitOpen):
                    await guard.score(REQUEST)
                return before
            finally:
                await guard.close()

        before = _run(go())
    assert breaker.state == "open" and before <= 3 and llm.requests == before
