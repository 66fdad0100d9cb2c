"""``pairstream``: the command line of the whole system.

Every command reads the same settings (``PAIRSTREAM_*`` variables, ``--config FILE``);
with none set, everything runs embedded (Tansu broker + chDB) on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from streams.config import Settings

EPILOG = """Settings come from PAIRSTREAM_* environment variables or a TOML file (--config);
the README lists every one. With none set, Kafka is an embedded Tansu broker and ClickHouse
is chDB under .pairstream/ (the embedded mode)."""


def _settings(args) -> Settings:
    settings = Settings.load(args.config)
    if getattr(args, "data_dir", None):
        settings = settings.replace(data_dir=args.data_dir)
    return settings


def cmd_generate(args) -> int:
    from streams.synthetic import write_dataset

    counts = write_dataset(Path(args.out), args.items, args.users, args.events, args.seed)
    print(json.dumps({"out": args.out, **counts}))
    return 0


def cmd_replay(args) -> int:
    from streams.replay import replay
    from streams.topics import ensure_topics

    settings = _settings(args)
    if settings.embedded_kafka:
        print("replay needs a running broker: set PAIRSTREAM_KAFKA_BOOTSTRAP "
              "(the embedded broker lives only as long as the process that starts it; "
              "`pairstream demo` replays into its own)", file=sys.stderr)
        return 2
    ensure_topics(settings.kafka_bootstrap, settings)
    counts = replay(
        settings.kafka_bootstrap,
        Path(args.clicks) if args.clicks else None,
        Path(args.items) if args.items else None,
        settings.topic_clicks, settings.topic_items, args.rate,
    )
    print(json.dumps(counts))
    return 0


def cmd_worker(args) -> int:
    from streams.runtime import run_worker, stack

    settings = _settings(args)
    with stack(settings) as (bootstrap, storage):
        print(f"worker: Kafka {bootstrap}, ClickHouse "
              f"{'chDB ' + str(settings.chdb_path) if settings.embedded_clickhouse else 'server'}",
              flush=True)
        run_worker(settings, bootstrap, storage, web=not args.no_web)
    return 0


def cmd_demo(args) -> int:
    from streams.demo import run_demo

    settings = _settings(args)
    overrides = {k: v for k, v in (("llm_backend", args.llm), ("llm_url", args.llm_url),
                                   ("llm_model", args.llm_model)) if v}
    return run_demo(settings.replace(**overrides) if overrides else settings, args)


def cmd_bench(args) -> int:
    if args.what == "ingest":
        from streams.benchmarks import ingest as bench_ingest

        result = bench_ingest.run(args)
    elif args.what == "distill":
        from streams.benchmarks import distill as bench_distill

        result = bench_distill.run(args)
    elif args.what == "score":
        from streams.benchmarks import score as bench_score

        result = bench_score.run(args)
    elif args.what == "quality":
        from streams.benchmarks import amazon
        from streams.benchmarks import quality as bench_quality

        if args.dataset == "amazon-magazine" and not amazon.available():
            print(f"skipped: the Amazon Magazine files are not in {amazon.DEFAULT_DIR}", file=sys.stderr)
            return 0
        result = bench_quality.run(args)
    elif args.what == "serve":
        from streams.benchmarks import serve as bench_serve

        result = bench_serve.run(args)
    elif args.what == "memory":
        from streams.benchmarks import memory as bench_memory

        result = bench_memory.run(args)
    else:
        print(f"unknown benchmark {args.what}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    return 0


def distill_config(args):
    from training.config import DistillConfig

    return DistillConfig(
        teacher_path=args.teacher, student_backbone=args.backbone, augment_multiple=args.augment,
        student_epochs=args.epochs, student_lr=args.lr, teacher_epochs=args.teacher_epochs, alpha=args.alpha,
        beta=args.beta, gamma=args.gamma, temperature=args.temperature, tolerance=args.tolerance,
        max_labels=args.max_labels, max_length=args.max_length,
        behaviour_min_count=args.behaviour_min_count)


def distill_config_from(extra: str):
    """The DistillConfig of a triggered run: ``training_args`` parsed like `distill` options."""
    import shlex

    parser = _JobArgumentParser(prog="training_args", add_help=False)
    _distill_options(parser)
    try:
        return distill_config(parser.parse_args(shlex.split(extra)))
    except ValueError as exc:  # shlex: an unclosed quote; argparse errors arrive as ValueError
        raise ValueError(f"invalid training args {extra!r}: {exc}") from None


class _JobArgumentParser(argparse.ArgumentParser):
    """Raises ValueError instead of printing usage and exiting: a bad job's args must fail
    that run (recorded with the reason), never end the trainer process."""

    def error(self, message):
        raise ValueError(message)

    def exit(self, status=0, message=None):
        raise ValueError(message or f"exit {status}")


def cmd_distill(args) -> int:
    from streams.storage import open_storage
    from training import distributed, run

    settings = _settings(args)
    config = distill_config(args)
    # under `accelerate launch` only the main process reads and writes ClickHouse (an embedded
    # chDB serves one process); it hands the data to the others (training.distributed)
    storage = open_storage(settings) if distributed.is_main() else None
    try:
        result = run(storage, settings.data_dir, config)
    finally:
        if storage is not None:
            storage.close()
    if result["version"] is None:
        return 0  # a replica process: the main one reports
    if args.json:
        print(json.dumps(result, default=str))
    else:
        d = result["decision"]
        print(f"{result['version']}: cross-encoder Spearman vs labels "
              f"{result['metrics']['cross']['spearman_vs_labels']:.3f}, "
              f"{'promoted' if d['promoted'] else 'rejected'} (incumbent {d['incumbent']}); "
              f"report {result['report']['json']}")
    return 0


def cmd_train_job(args) -> int:
    from streams.trainer import train_job

    settings = _settings(args)
    result = train_job(args.run_dir, settings.data_dir, distill_config(args))
    print(json.dumps({"version": result["version"], "decision": result["decision"],
                      "minutes": result["minutes"]}, default=str))
    return 0


def cmd_trainer(args) -> int:
    from streams.runtime import stack
    from streams.trainer import run_trainer

    settings = _settings(args)
    if settings.embedded_kafka or settings.embedded_clickhouse:
        print("the trainer service serves training_mode=kafka: it needs PAIRSTREAM_KAFKA_BOOTSTRAP "
              "and PAIRSTREAM_CLICKHOUSE_URL (embedded workers train in a subprocess instead)",
              file=sys.stderr)
        return 2
    with stack(settings) as (bootstrap, storage):
        run_trainer(settings, bootstrap, storage, distill_config_from, once=args.once)
    return 0


def cmd_publish(args) -> int:
    import asyncio

    from streams.runtime import stack
    from streams.trainer import publish_with_own_producer
    from training import registry

    settings = _settings(args)
    with stack(settings) as (bootstrap, storage):
        row = registry.get(storage, args.version) if args.version else registry.promoted(storage)
        if row is None:
            print("no promoted model to publish (run `pairstream distill` first)", file=sys.stderr)
            return 2
        summary = asyncio.run(publish_with_own_producer(storage, settings, bootstrap, row["version"]))
    print(json.dumps(summary, default=str) if args.json else
          f"published {summary['score_version']}: {summary['pairs']} pairs of {summary['items']} items, "
          f"{summary['cross_rescored']} rescored by the cross-encoder, in {summary['seconds']}s")
    return 0


def cmd_models(args) -> int:
    from streams.storage import open_storage, scores
    from streams.storage import runs as run_table
    from training import registry

    settings = _settings(args)
    storage = open_storage(settings)
    try:
        if args.action == "list":
            live = scores.live(storage)
            rows = [{"version": m["version"], "status": m["status"],
                     "spearman_vs_labels": m["metrics"].get("cross", {}).get("spearman_vs_labels"),
                     "created_at": str(m["created_at"])} for m in registry.models(storage)]
            versions = scores.versions(storage)
            if args.json:
                print(json.dumps({"models": rows, "score_versions": versions, "live": live}, default=str))
                return 0
            for r in rows:
                print(f"{r['version']:28} {r['status']:9} spearman {r['spearman_vs_labels']}")
            for v in versions:
                mark = "*" if live and v["score_version"] == live["score_version"] else " "
                print(f"{mark} {v['score_version']:44} {v['status']:9} {v['rows']} rows")
        elif args.action == "runs":
            for r in run_table.runs(storage, args.limit):
                print(json.dumps(r, default=str))
        elif args.action == "rollback":
            target = scores.rollback_target(storage, args.version)
            scores.point_live(storage, target["score_version"], target["model_version"])
            registry.restore(storage, target["model_version"])
            notified = _announce_rollback(settings, target)
            print(f"live score version is now {target['score_version']} "
                  f"(model {target['model_version']}); "
                  + ("workers notified on " + settings.topic_model_updates if notified else
                     "no broker configured: workers load it when they start"))
        return 0
    finally:
        storage.close()


def _announce_rollback(settings, target) -> bool:
    import asyncio

    if settings.embedded_kafka:
        return False

    async def send():
        from streams.produce import open_producer
        from streams.trainer import announce

        async with open_producer(settings.kafka_bootstrap) as producer:
            await announce(producer, settings, {"event": "rollback", **{
                k: target[k] for k in ("model_version", "score_version")}})

    asyncio.run(send())
    return True


def cmd_lag(args) -> int:
    import time

    from streams.lag import LagSampler, format_table

    settings = _settings(args)
    if settings.embedded_kafka:
        print("lag needs a running broker: set PAIRSTREAM_KAFKA_BOOTSTRAP (the demo prints "
              "its lag table itself)", file=sys.stderr)
        return 2
    sampler = LagSampler(settings.kafka_bootstrap)
    try:
        groups = [args.group] if args.group else sampler.groups()
        taken = 0
        while True:
            sampler.sample(groups)
            taken += 1
            if args.watch:
                rows = sampler.table(args.window)
                print("\033[2J\033[H" + format_table(rows), flush=True)
            elif taken >= args.samples:
                break
            time.sleep(args.interval)
        rows = sampler.table(args.window)
        if args.json:
            print(json.dumps(rows))
        else:
            print(format_table(rows))
        return 0 if all(r["status"] == "OK" for r in rows) else 1
    except KeyboardInterrupt:
        return 0
    finally:
        sampler.close()


def cmd_labels(args) -> int:
    from streams.labels_cli import run

    return run(_settings(args), args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pairstream",
        description="Learn which products go well together from live clicks: "
                    "Kafka -> pair counts -> LLM labels -> distilled student -> scored pair tables.",
        epilog=EPILOG,
    )
    parser.add_argument("--config", help="TOML settings file (else PAIRSTREAM_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write a synthetic marketplace: items, clicks, truth",
                       description="Synthetic second-hand marketplace with ground-truth "
                                   "compatibility (items.jsonl, clicks.jsonl, truth.jsonl).")
    p.add_argument("--items", type=int, default=2000, help="catalogue size")
    p.add_argument("--users", type=int, default=500, help="number of users")
    p.add_argument("--events", type=int, default=50000, help="number of click events")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed, same files)")
    p.add_argument("--out", default="data/synthetic", help="output directory")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("replay", help="produce JSON-lines files to Kafka",
                       description="Produce items (key item_id) then clicks (key user_id), "
                                   "line by line, with a progress bar.")
    p.add_argument("--clicks", help="clicks JSON lines")
    p.add_argument("--items", help="items JSON lines (sent first)")
    p.add_argument("--rate", type=float, help="clicks per second (default: as fast as possible)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("worker", help="run a stream worker (Faust app + click ingest)",
                       description="Run one worker of the consumer group. Embedded mode starts "
                                   "its own broker; set PAIRSTREAM_KAFKA_BOOTSTRAP to join a cluster.")
    p.add_argument("--data-dir", help="override PAIRSTREAM_DATA_DIR")
    p.add_argument("--no-web", action="store_true", help="do not start the web server")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", help="the whole pipeline on this machine, end to end",
                       description="Generate a catalogue and clicks, stream them through the "
                                   "embedded stack (ingest, tiers, labelling), run one CPU "
                                   "distillation round in a child process, publish scores, hot "
                                   "reload, query the lookup API, and print a summary: top "
                                   "partners with per-dimension reasons, consumer lag, model "
                                   "metrics and the HTML report's path.")
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--events", type=int, default=200000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data-dir", help="override PAIRSTREAM_DATA_DIR (default .pairstream)")
    p.add_argument("--llm", choices=["heuristic", "openai", "hf"],
                   help="scoring backend (default: PAIRSTREAM_LLM_BACKEND, else heuristic)")
    p.add_argument("--llm-url", help="openai: base URL of the endpoint (…/v1)")
    p.add_argument("--llm-model", help="openai: model name; hf: local model directory")
    p.add_argument("--backbone", default="minilm",
                   help="student backbone of the distillation round: minilm (pretrained, "
                        "default) | tiny (seconds, for smoke tests) | PATH")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmarks (print figures; --json for one JSON object)",
                       description="Benchmarks. ingest: Kafka -> pairs -> ClickHouse against "
                                   "raw aiokafka consumption in the same run. score: LLM "
                                   "labelling against a local OpenAI-compatible server with a "
                                   "fixed latency (prompt splitting, concurrency, cache). "
                                   "distill: one training round with the `distill` options below "
                                   "(main run at --augment, "
                                   "augmentation curve always at 0, 1 and 4). serve: ONNX vs torch, int8 vs "
                                   "fp32, two-tower vs cross-encoder, lookup API latency. quality: the "
                                   "whole pipeline (stream, label, train, publish) on the bestseller "
                                   "marketplace generator, ROC AUC of published score, count, lift, "
                                   "Swing, labels and long-tail lookups against its hidden truth "
                                   "(--events 200000 by default is a good size). memory: a real "
                                   "worker's RSS while --rounds waves of --users new users "
                                   "(--events clicks each) come and are evicted.")
    p.add_argument("what", choices=["ingest", "score", "distill", "serve", "quality", "memory"],
                   help="which benchmark")
    p.add_argument("--events", type=int, default=300000, help="events to stream")
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
    p.add_argument("--cross-budget", type=float, default=60.0, help="quality: cross-encoder seconds at publish")
    p.add_argument("--dataset", choices=["marketplace", "amazon-magazine"], default="marketplace",
                   help="quality: the bestseller marketplace generator, or Amazon Magazine reviews as "
                        "sessions with also_buy as truth (read from ../shared/data; skipped if absent)")
    p.add_argument("--rounds", type=int, default=3, help="memory: waves of new users")
    p.add_argument("--users", type=int, default=8000,
                   help="quality: marketplace users; memory: new users per wave")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _distill_options(p)  # distill: the round's config, as `pairstream distill` takes it
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("distill", help="one training round: teacher -> students -> ONNX -> gate",
                       description="Read labels from ClickHouse, fine-tune the teacher (tiny "
                                   "Qwen2 on a CPU, or --teacher PATH), distil the cross-encoder "
                                   "and two-tower students, export ONNX with parity checks, and "
                                   "promote if the held-out metrics beat the promoted model. "
                                   "One process uses one device (CUDA where torch sees a GPU, else CPU); "
                                   "`accelerate launch --multi_gpu --num_processes N -m streams.cli distill ...` "
                                   "or `torchrun --nproc_per_node N -m streams.cli distill ...` trains "
                                   "data-parallel on N GPUs (N gloo processes on a CPU-only machine), "
                                   "the main process reading ClickHouse and writing the results.")
    p.add_argument("--data-dir", help="override PAIRSTREAM_DATA_DIR")
    _distill_options(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("train-job", help="(internal) one embedded training run in a child process",
                       description="What an embedded worker starts when a run is due: imports "
                                   "the table snapshot in RUN_DIR into a private chDB, trains, and "
                                   "writes result.json and the registry rows back to RUN_DIR.")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data-dir", help="where model artifacts go (the worker's data dir)")
    _distill_options(p)
    p.set_defaults(func=cmd_train_job)

    p = sub.add_parser("trainer", help="the trainer service: runs jobs from training-jobs",
                       description="Production training (training_mode=kafka): consume job "
                                   "messages from the training-jobs topic, train against the "
                                   "ClickHouse server, publish and announce promotions.")
    p.add_argument("--once", action="store_true", help="run one job, then exit")
    p.set_defaults(func=cmd_trainer)

    p = sub.add_parser("publish", help="score candidate pairs with the promoted students",
                       description="Score every pair at or above the low tier plus the labelled "
                                   "pairs (two-tower), rescore each item's top partners with the "
                                   "cross-encoder within the time budget, write a new score version, "
                                   "expose it atomically and produce pair-scores / item-partners.")
    p.add_argument("--version", help="model version (default: the promoted one)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("models", help="the model registry, score versions, training runs, rollback",
                       description="list: models and score versions (* = live). runs: training "
                                   "runs, newest first. rollback VERSION: expose the newest kept "
                                   "score version of a model (or a score version) again, mark the "
                                   "model promoted, and tell the workers to reload.")
    p.add_argument("--data-dir", help="override PAIRSTREAM_DATA_DIR")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="models and score versions")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("runs", help="training runs")
    a.add_argument("--limit", type=int, default=20)
    a = actions.add_parser("rollback", help="serve an older version again")
    a.add_argument("version", help="model version or score version")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("lag", help="consumer lag per group and partition, with Burrow statuses",
                       description="Committed offset, end offset, lag, consume rate and an "
                                   "estimate in seconds per group and partition, judged OK / WARN "
                                   "/ STALL / STOP / REWIND by Burrow's rules over a window of "
                                   "samples (see streams/lag.py). Exit status 1 if any partition "
                                   "is not OK.")
    p.add_argument("--group", help="one consumer group (default: all)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--samples", type=int, default=4, help="samples before printing (one-shot)")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between samples")
    p.add_argument("--window", type=int, default=10, help="samples judged per partition")
    p.set_defaults(func=cmd_lag)

    p = sub.add_parser("labels", help="list, inspect and override pair labels",
                       description="Pair labels in ClickHouse. A manual label (source manual) "
                                   "always wins over default, LLM and heuristic ones. Embedded "
                                   "chDB is one process at a time: stop the worker first.")
    p.add_argument("--data-dir", help="override PAIRSTREAM_DATA_DIR")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="effective labels, newest first")
    a.add_argument("--source", choices=["default", "behaviour", "llm", "heuristic", "manual"])
    a.add_argument("--tier", choices=["low", "medium", "high"])
    a.add_argument("--limit", type=int, default=20)
    a.add_argument("--json", action="store_true", help="JSON lines")
    a = actions.add_parser("show", help="every label of one pair, with per-dimension reasons")
    a.add_argument("item_a")
    a.add_argument("item_b")
    a = actions.add_parser("set", help="override a pair's label (source manual): the gold set")
    a.add_argument("item_a")
    a.add_argument("item_b")
    a.add_argument("score", type=float, help="1..10")
    a.add_argument("--dims", help="per-dimension gold scores too, e.g. category=8,colour=3")
    a.add_argument("--reason", default="", help="why (kept with the label)")
    a = actions.add_parser("quality", help="each label source, the model and the published score "
                                           "against the manual labels: MAE, accuracy, Cohen's kappa")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("consistency", help="score labelled pairs again with the configured backend "
                                               "(PAIRSTREAM_LLM_BACKEND) and report how often it agrees "
                                               "with itself, per dimension")
    a.add_argument("--pairs", type=int, default=100, help="labelled pairs to score (manual ones first)")
    a.add_argument("--repeats", type=int, default=2, help="scorings of each pair (>= 2)")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("review", help="unreviewed pairs where label, model and behaviour "
                                          "disagree, highest impact (spread x ln(1+co-clicks)) first")
    a.add_argument("--limit", type=int, default=20)
    a.add_argument("--json", action="store_true", help="JSON lines")
    p.set_defaults(func=cmd_labels)
    return parser


def _distill_options(p: argparse.ArgumentParser) -> None:
    from training.config import DistillConfig as D  # torch-free: the one place defaults live

    p.add_argument("--teacher", default=D.teacher_path, help="local Qwen checkpoint (LoRA on a GPU)")
    p.add_argument("--backbone", default=D.student_backbone, help="student backbone: minilm | tiny | PATH")
    p.add_argument("--augment", type=float, default=D.augment_multiple,
                   help="teacher-labelled pairs per labelled training pair (default %(default)s)")
    p.add_argument("--epochs", type=int, default=D.student_epochs, help="student epochs (default %(default)s)")
    p.add_argument("--lr", type=float, default=D.student_lr,
                   help="student encoder learning rate; the fresh head learns 10x faster (default %(default)s)")
    p.add_argument("--teacher-epochs", type=int, default=D.teacher_epochs, help="teacher epochs (default %(default)s)")
    p.add_argument("--alpha", type=float, default=D.alpha, help="weight of the KL to the teacher (default %(default)s)")
    p.add_argument("--beta", type=float, default=D.beta, help="weight of the label cross-entropy (default %(default)s)")
    p.add_argument("--gamma", type=float, default=D.gamma, help="weight of the score MSE (default %(default)s)")
    p.add_argument("--temperature", type=float, default=D.temperature,
                   help="distillation temperature (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=D.tolerance,
                   help="promotion gate tolerance (default %(default)s)")
    p.add_argument("--max-length", type=int, default=D.max_length, help="student tokens per pair (default %(default)s)")
    p.add_argument("--behaviour-min-count", type=int, default=D.behaviour_min_count,
                   help="pairs with at least this many co-clicks get a behaviour-derived soft label from "
                        "pair_stats; heuristic labels give way to it, LLM and manual ones never "
                        "(0 = off; default %(default)s)")
    p.add_argument("--max-labels", type=int, default=D.max_labels,
                   help="use at most this many labelled training pairs (0 = all; bounds CPU runs)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
