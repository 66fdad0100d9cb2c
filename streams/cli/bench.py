"""``pairstream bench``: the benchmarks under the checkout's ``bench/`` (not shipped in the wheel)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

from streams.cli.common import command
from streams.cli.training import distill_options


def register(sub) -> None:
    p = command(sub, "bench", cmd_bench, help="benchmarks (print figures; --json for one JSON object)",
                description="""Benchmarks. ingest: Kafka -> pairs -> ClickHouse against raw aiokafka
                    consumption in the same run. score: LLM labelling against a local
                    OpenAI-compatible server with a fixed latency (prompt splitting, concurrency,
                    cache). distill: one training round with the `distill` options below (main run
                    at --augment, augmentation curve always at 0, 1 and 4). serve: ONNX vs torch,
                    int8 vs fp32, two-tower vs cross-encoder, lookup API latency; serve --busy: the lookup
                    processes' latency beside a default worker at 10k clicks/s and their idle
                    throughput per core. quality: the whole
                    pipeline (stream, label, train, publish) on the bestseller marketplace
                    generator, ROC AUC of published score, count, lift, Swing, labels and long-tail
                    lookups against its hidden truth (--events 200000 by default is a good size).
                    memory: a real worker's RSS while --rounds waves of --users new users (--events
                    clicks each) come and are evicted. freshness: a real worker with default settings
                    fed --fresh-rate clicks/s: the first score version's delay, and the staleness of
                    published pairs (probe clicks until the lookup API shows them) for --window s.
                    llm: a local causal LM (Gemma 3 270M from the realllm extra, or --model)
                    labelling --llm-pairs pairs through the hf backend, every prompt run whole vs
                    with prefix reuse (the default), in the same run. threads: a tiny-teacher epoch
                    idle and beside --busy spinning processes, with the training child's thread
                    settings against torch's defaults, in the same run. evidence: lift's item
                    marginals read from item_day_clicks against a scan of pair_counts, on --pair-rows
                    pair-day rows over --items items, in the same run. stats: one statistics
                    refresh on a generated graph (--users, --per-user, --items): seconds and peak
                    memory of the process that runs it.""")
    p.add_argument("what", choices=["ingest", "score", "distill", "serve", "quality", "memory", "freshness",
                                    "llm", "threads", "evidence", "stats"],
                   help="which benchmark")
    p.add_argument("--events", type=int, default=300000, help="events to stream")
    p.add_argument("--log", choices=["memory", "durable"], default="memory",
                   help="ingest: the embedded broker's log storage (durable: Tansu's s3:// on SeaweedFS)")
    p.add_argument("--fresh-events", type=int, default=30000,
                   help="events offered at --fresh-rate for the freshness measurement")
    p.add_argument("--fresh-rate", type=float, default=10000, help="offered events/s for freshness")
    p.add_argument("--pairs", type=int, default=500, help="score: pairs to label")
    p.add_argument("--latency-ms", type=float, default=50.0, help="score: server latency per reply")
    p.add_argument("--concurrency", type=int, default=64, help="score: most prompts in flight")
    p.add_argument("--labelled", type=int, default=600, help="distill: labelled pairs")
    p.add_argument("--out", help="distill: keep artifacts and the report here")
    p.add_argument("--requests", type=int, default=2000, help="serve: lookup requests per size")
    p.add_argument("--lookup-only", action="store_true",
                   help="serve: only the lookup latency and mixed-load figures (tiny students: seconds)")
    p.add_argument("--items", type=int, default=3000, help="quality: marketplace items")
    p.add_argument("--seed", type=int, default=101, help="quality: marketplace seed")
    p.add_argument("--long-tail", type=int, default=3000, help="quality: long-tail pairs asked of the lookup")
    p.add_argument("--cross-budget", type=float, default=None,
                   help="quality: cross-encoder seconds at publish (default: the publish_cross_budget_s "
                        "setting, what the worker's publish gets)")
    p.add_argument("--dataset", choices=["marketplace", "ecosystems", "amazon-magazine"], default="marketplace",
                   help="quality: the bestseller marketplace (fit in title phrases), the brand-ecosystem "
                        "marketplace (fit in brand and model fields), or Amazon Magazine reviews as "
                        "sessions with also_buy as truth (read from ../shared/data; skipped if absent)")
    p.add_argument("--rounds", type=int, default=3, help="memory: waves of new users")
    p.add_argument("--users", type=int, default=8000,
                   help="quality: marketplace users; memory: new users per wave")
    p.add_argument("--window", type=float, default=120.0,
                   help="freshness: seconds of probing after the first score version")
    p.add_argument("--probes", type=int, default=20, help="freshness: probe pairs")
    p.add_argument("--standins-nice", type=int, default=None,
                   help="freshness, serve --busy: run the bench's broker and click producer (stand-ins for "
                        "hosts of their own) this much nicer (default: 0; serve --busy: 5, as the worker)")
    p.add_argument("--first-timeout", type=float, default=900.0,
                   help="freshness: give up when no score version comes within this many seconds")
    p.add_argument("--model", default="",
                   help="llm: a local model directory or .gguf file (default: Gemma 3 270M, realllm extra)")
    p.add_argument("--llm-pairs", type=int, default=10, help="llm: pairs to label each way")
    p.add_argument("--busy", type=int, nargs="?", const=0, default=None,
                   help="threads: processes spinning beside the epoch (default 2); serve: with no "
                        "value, lookups from a busy default worker (10k clicks/s, continuous "
                        "publishing, training) and an idle lookup process's throughput")
    p.add_argument("--rows", type=int, default=480, help="threads: training rows of the epoch")
    p.add_argument("--pair-rows", type=int, default=4_000_000, help="evidence: pair-day rows to write")
    p.add_argument("--per-user", type=int, default=20, help="stats: item visits per user")
    p.add_argument("--stats-memory-mb", type=int, default=1500,
                   help="stats: the refresh's spill threshold (PAIRSTREAM_STATS_MEMORY_MB)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    distill_options(p)  # distill: the round's config, as `pairstream distill` takes it


def bench_module(name: str):
    """``bench.<name>`` from the source checkout: benchmarks measure the system from outside
    and are not shipped in the wheel. Found on ``sys.path`` (a run from the checkout's root),
    else beside the installed ``streams`` package (an editable install)."""
    checkout = Path(__file__).resolve().parents[2]
    if importlib.util.find_spec("bench") is None and (checkout / "bench" / "__init__.py").is_file():
        sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", f"bench.{name}"):
            raise
        raise SystemExit("the benchmarks live in the source checkout's bench/ folder, which an installed "
                         "wheel does not carry: run `pairstream bench` from a clone (`make setup`)") from None


def cmd_bench(args) -> int:
    if args.what == "quality" and args.dataset == "amazon-magazine":
        amazon = bench_module("amazon")
        if not amazon.available():
            print(f"skipped: the Amazon Magazine files are not in {amazon.DEFAULT_DIR}", file=sys.stderr)
            return 0
    name = "serve_busy" if args.what == "serve" and args.busy is not None else args.what
    result = bench_module(name).run(args)
    if args.json:
        print(json.dumps(json_safe(result), allow_nan=False))
    return 0


def json_safe(value):
    """``value`` with every NaN or infinity as ``null``: an AUC with one class is NaN, and
    Python's ``json`` would write a bare ``NaN`` that jq and most parsers refuse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
