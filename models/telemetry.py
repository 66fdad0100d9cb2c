"""Prometheus metrics of the scoring models (prefix ``pairstream_``; no per-pair labels)."""

from prometheus_client import Counter, Gauge, Histogram

LLM_CALLS = Counter("pairstream_llm_calls_total", "LLM prompt calls by outcome.",
                    ["backend", "outcome"])
LLM_SECONDS = Histogram("pairstream_llm_call_seconds", "Latency of one LLM prompt call.",
                        ["backend"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
LLM_QUEUE = Gauge("pairstream_llm_queue_depth", "Prompts waiting for or holding a call slot.",
                  ["backend"])
LLM_CIRCUIT_OPEN = Gauge("pairstream_llm_circuit_open", "1 while the circuit breaker is open.",
                         ["backend"])
