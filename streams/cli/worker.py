"""``pairstream worker`` and ``demo``: run the stream worker, or the whole pipeline end to end."""

from __future__ import annotations

import sys

from streams.cli.common import command, settings_from


def register(sub) -> None:
    p = command(sub, "worker", cmd_worker, help="run a stream worker (Faust app + click ingest)",
                description="Run one worker of the consumer group. Embedded mode starts "
                            "its own broker; set PAIRSTREAM_KAFKA_BOOTSTRAP to join a cluster.", data_dir=True)
    p.add_argument("--no-web", action="store_true", help="do not start the web server (nor the lookup processes)")
    command(sub, "lookup-server", cmd_lookup_server, help="serve the lookup API from the worker's exports",
            description="""Answer the lookup API on PAIRSTREAM_LOOKUP_PORT from the snapshots a worker
                exports under its data directory (serving/), apart from the worker's work. The worker
                starts PAIRSTREAM_LOOKUP_PROCESSES of these itself; run one by hand only beside a worker
                on the same data directory (docs/serving.md).""", data_dir=True)
    p = command(sub, "demo", cmd_demo, help="the whole pipeline on this machine, end to end",
                description="""Generate a catalogue and clicks, stream them through the embedded stack (ingest,
                    tiers, labelling), run one CPU distillation round in a child process, publish
                    scores, hot reload, query the lookup API, and print a summary: top partners with
                    per-dimension reasons, consumer lag, model metrics, the HTML report's path and a
                    timeline of the steps; then the worker keeps serving (curl lines, `pairstream
                    lag`, /status) until Ctrl-C.""",
                data_dir="override PAIRSTREAM_DATA_DIR (default .pairstream)")
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--events", type=int, default=200000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--llm", choices=["heuristic", "openai", "hf"],
                   help="scoring backend (default: PAIRSTREAM_LLM_BACKEND, else heuristic)")
    p.add_argument("--llm-url", help="openai: base URL of the endpoint (…/v1)")
    p.add_argument("--llm-model", help="openai: model name; hf: local model directory")
    p.add_argument("--exit", action="store_true",
                   help="stop after the summary (default: keep the worker serving the lookup API, "
                        "/status and /metrics until Ctrl-C)")
    p.add_argument("--backbone", default="minilm",
                   help="student backbone of the distillation round: minilm (pretrained, "
                        "default) | tiny (seconds, for smoke tests) | PATH")


def cmd_worker(args) -> int:
    from streams.cli.training import distill_config_from
    from streams.worker import run_worker, stack

    settings = settings_from(args)
    # the training options are parsed now, not minutes later in the first run's child
    for name, value in (("PAIRSTREAM_TRAINING_ARGS", settings.training_args),
                        ("PAIRSTREAM_TRAINING_FIRST_ARGS", settings.training_first_args)):
        try:
            distill_config_from(value)
        except ValueError as exc:
            print(f"pairstream worker: {name}: {exc}", file=sys.stderr)
            return 2
    with stack(settings) as (bootstrap, storage):
        print(f"worker: Kafka {bootstrap}, ClickHouse {storage.describe()}", flush=True)
        run_worker(settings, bootstrap, storage, web=not args.no_web)
    return 0

def cmd_lookup_server(args) -> int:
    import asyncio
    import logging

    from streams.serving.lookup_process import serve_lookups

    settings = settings_from(args)
    if not settings.lookup_port:
        print("pairstream lookup-server: PAIRSTREAM_LOOKUP_PORT is 0 (no lookup processes)", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(settings.log_level.upper())
    asyncio.run(serve_lookups(settings))
    return 0


def cmd_demo(args) -> int:
    from streams.dev.demo import run_demo

    settings = settings_from(args)
    overrides = {k: v for k, v in (("llm_backend", args.llm), ("llm_url", args.llm_url),
                                   ("llm_model", args.llm_model)) if v}
    return run_demo(settings.replace(**overrides) if overrides else settings, args)
