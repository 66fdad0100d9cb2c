"""Reliability around a backend: timeout, retries with back-off, limits, circuit breaker.

- per-call timeout (``asyncio.wait_for``);
- transient failures retried with exponential back-off and full jitter (AWS Architecture
  Blog, "Exponential Backoff and Jitter", 2015);
- a concurrency limit (semaphore) and a requests/s limit (token bucket);
- a circuit breaker (Nygard, *Release It!*, 2007): after ``failure_threshold`` consecutive
  failures calls fail fast for ``cooldown_s``, then one trial call decides whether to close.

Unparseable replies (``ReplyError``) pass straight through: re-asking is the scorer's call.
"""

from __future__ import annotations

import asyncio
import random
import time

from models import telemetry
from models.llm.base import Backend, BackendError, DimensionRequest, TransientError
from models.reply import DimensionReply, ReplyError


class CircuitOpen(TransientError):
    """The endpoint kept failing; calls are refused until the cool-down ends."""


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(1.0, rate))
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            while True:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 10.0, clock=time.monotonic):
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial: asyncio.Event | None = None  # set while the half-open trial is in flight

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    async def before_call(self) -> None:
        """Return to make the call, or raise ``CircuitOpen``. Half-open: one trial call goes
        ahead and the calls that arrive meanwhile wait for its outcome."""
        while True:
            state = self.state
            if state == "closed":
                return
            if state == "open":
                raise CircuitOpen(f"circuit open after {self.failures} consecutive failures")
            if self._trial is None:
                self._trial = asyncio.Event()
                return
            await self._trial.wait()

    def _end_trial(self) -> None:
        if self._trial is not None:
            self._trial.set()
            self._trial = None

    def success(self) -> None:
        self.failures, self.opened_at = 0, None
        self._end_trial()

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failure_threshold or self.opened_at is not None:
            self.opened_at = self.clock()
        self._end_trial()


class GuardedBackend:
    """Wraps a backend with the reliability rules above; same ``score`` call."""

    def __init__(self, backend: Backend, *, timeout_s: float = 30.0, retries: int = 3,
                 concurrency: int = 16, rate_per_s: float = 50.0, backoff_s: float = 0.2,
                 max_backoff_s: float = 5.0, breaker: CircuitBreaker | None = None):
        self.backend = backend
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.breaker = breaker or CircuitBreaker()
        self.limiter = TokenBucket(rate_per_s)
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self.calls = 0  # calls that reached the backend

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    async def score(self, request: DimensionRequest) -> DimensionReply:
        name = self.backend.name
        attempt = 0
        while True:
            await self.breaker.before_call()
            telemetry.LLM_CIRCUIT_OPEN.labels(backend=name).set(0)
            telemetry.LLM_QUEUE.labels(backend=name).inc()
            try:
                async with self._slots:
                    await self.limiter.acquire()
                    started = time.perf_counter()
                    self.calls += 1
                    reply = await asyncio.wait_for(self.backend.score(request), self.timeout_s)
                    telemetry.LLM_SECONDS.labels(backend=name).observe(time.perf_counter() - started)
            except ReplyError:
                self.breaker.success()  # the endpoint works; the text did not parse
                telemetry.LLM_CALLS.labels(backend=name, outcome="unparsed").inc()
                raise
            except (TransientError, asyncio.TimeoutError) as exc:
                self.breaker.failure()
                telemetry.LLM_CALLS.labels(backend=name, outcome="error").inc()
                if self.breaker.state != "closed":
                    telemetry.LLM_CIRCUIT_OPEN.labels(backend=name).set(1)
                if attempt >= self.retries:
                    if isinstance(exc, asyncio.TimeoutError):
                        raise TransientError(f"timed out after {self.timeout_s}s") from exc
                    raise
                attempt += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(0, delay))
                continue
            except BackendError:
                telemetry.LLM_CALLS.labels(backend=name, outcome="error").inc()
                raise
            finally:
                telemetry.LLM_QUEUE.labels(backend=name).dec()
            self.breaker.success()
            telemetry.LLM_CALLS.labels(backend=name, outcome="ok").inc()
            return reply

    async def close(self) -> None:
        await self.backend.close()
