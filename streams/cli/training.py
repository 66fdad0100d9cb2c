"""``pairstream distill``, ``train-job``, ``trainer`` and ``publish``: one training round, the
embedded run's child process, the trainer service, and a publish by hand."""

from __future__ import annotations

import argparse
import json
import sys

from streams.cli.common import command, settings_from


def register(sub) -> None:
    p = command(sub, "distill", cmd_distill, help="one training round: teacher -> students -> ONNX -> gate",
                description="""Read labels from ClickHouse, fine-tune the teacher (tiny Qwen2 on a CPU, or
                    --teacher PATH), distil the cross-encoder and two-tower students, export ONNX
                    with parity checks, and promote if the held-out metrics beat the promoted model.
                    One process uses one device (CUDA where torch sees a GPU, else CPU); `accelerate
                    launch --multi_gpu --num_processes N -m streams.cli distill ...` or `torchrun
                    --nproc_per_node N -m streams.cli distill ...` trains data-parallel on N GPUs (N
                    gloo processes on a CPU-only machine), the main process reading ClickHouse and
                    writing the results.""", data_dir=True)
    distill_options(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = command(sub, "train-job", cmd_train_job, help="(internal) one embedded training run in a child process",
                description="""What an embedded worker starts when a run is due: imports the table snapshot in
                    RUN_DIR into a private chDB, trains, and writes result.json and the registry
                    rows back to RUN_DIR.""",
                data_dir="where model artifacts go (the worker's data dir)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--parent-pid", type=int, default=None,
                   help="end when this process is no longer the parent (the worker died)")
    distill_options(p)
    p = command(sub, "trainer", cmd_trainer, help="the trainer service: runs jobs from training-jobs",
                description="""Production training (training_mode=kafka): consume job messages from the
                    training-jobs topic, train against the ClickHouse server, publish and announce
                    promotions.""")
    p.add_argument("--once", action="store_true", help="run one job, then exit")
    p = command(sub, "publish", cmd_publish, help="score candidate pairs with the promoted students",
                description="""Score every pair at or above the low tier plus the labelled pairs (two-tower),
                    rescore each item's top partners with the cross-encoder within the time budget,
                    write a new score version, expose it atomically and produce pair-scores /
                    item-partners.""")
    p.add_argument("--version", help="model version (default: the promoted one)")
    p.add_argument("--json", action="store_true")


def distill_config(args):
    from training import DistillConfig

    return DistillConfig(
        teacher_path=args.teacher, student_backbone=args.backbone, augment_multiple=args.augment,
        student_epochs=args.epochs, student_lr=args.lr, teacher_epochs=args.teacher_epochs, alpha=args.alpha,
        beta=args.beta, gamma=args.gamma, temperature=args.temperature, tolerance=args.tolerance,
        max_labels=args.max_labels, max_test=args.max_test, max_length=args.max_length,
        behaviour_min_count=args.behaviour_min_count, worth_min_count=args.worth_min_count,
        hard_negatives=args.hard_negatives)

def distill_config_from(extra: str):
    """The DistillConfig of a triggered run: ``training_args`` parsed like `distill` options."""
    import shlex

    parser = _JobArgumentParser(prog="training_args", add_help=False)
    distill_options(parser)
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
    from streams.core.storage import open_storage
    from training import is_main_process, run
    from training.epochs import quiet_when_logged

    settings = settings_from(args)
    config = distill_config(args)
    quiet_when_logged()
    # under `accelerate launch` only the main process reads and writes ClickHouse (an embedded
    # chDB serves one process); it hands the data to the others (training.distributed)
    storage = open_storage(settings) if is_main_process() else None
    try:
        result = run(storage, settings.data_dir, config)
    finally:
        if storage is not None:
            storage.close()
    if result.version is None:
        return 0  # a replica process: the main one reports
    if args.json:
        print(result.to_json())
    else:
        metrics, decision = result.metrics, result.decision
        incumbent = decision.get("incumbent")
        print(f"{result.version}: Spearman vs labels two-tower {metrics['two_tower']['spearman_vs_labels']:.3f}, "
              f"cross-encoder {metrics['cross']['spearman_vs_labels']:.3f}; "
              f"{'promoted' if result.promoted else 'rejected'} on the two-tower (incumbent's "
              f"{'none' if incumbent is None else f'{incumbent:.3f}'}); report {result.report['json']}")
    return 0

def cmd_train_job(args) -> int:
    from streams.core.lifeline import die_with_parent, training_threads
    from streams.retraining.launcher import train_job
    from training.epochs import quiet_when_logged

    settings = settings_from(args)
    quiet_when_logged()  # its output is the run's train.log
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    import torch

    torch.set_num_threads(training_threads(settings.training_threads))
    result = train_job(args.run_dir, settings.data_dir, distill_config(args))
    print(json.dumps({"version": result.version, "decision": result.decision,
                      "minutes": result.minutes}, default=str))
    return 0

def cmd_trainer(args) -> int:
    from streams.retraining.trainer_service import run_trainer
    from streams.worker import stack

    settings = settings_from(args)
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

    from streams.core.storage import registry
    from streams.publishing.promotion import publish_with_own_producer
    from streams.worker import stack

    settings = settings_from(args)
    with stack(settings) as (bootstrap, storage):
        row = registry.get(storage, args.version) if args.version else registry.promoted(storage)
        if row is None:
            print("no promoted model to publish (run `pairstream distill` first)", file=sys.stderr)
            return 2
        summary = asyncio.run(publish_with_own_producer(storage, settings, bootstrap, row["version"]))
    print(json.dumps(summary, default=str) if args.json else
          f"published {summary['score_version']}: {summary['pairs']} pairs of {summary['items']} items, "
          f"{summary['cross_rescored']} rescored by the cross-encoder "
          f"(its share {summary['cross_mix']['weight']}, {summary['cross_mix']['source']} on "
          f"{summary['cross_mix']['pairs']} held-out pairs), in {summary['seconds']}s")
    return 0

def distill_options(p: argparse.ArgumentParser) -> None:
    from training import DistillConfig as D  # torch-free: the one place defaults live

    p.add_argument("--teacher", default=D.teacher_path,
                   help="the teacher LLM: a local Qwen checkpoint (LoRA on a GPU), or 'tiny' for a "
                        "from-scratch tiny Qwen2 config (tests, the demo); default none: the students "
                        "learn from the labels alone (a from-scratch teacher on a CPU teaches them noise)")
    p.add_argument("--backbone", default=D.student_backbone, help="student backbone: minilm | tiny | PATH")
    p.add_argument("--augment", type=float, default=D.augment_multiple,
                   help="teacher-labelled pairs per labelled training pair (default %(default)s)")
    p.add_argument("--epochs", type=int, default=D.student_epochs, help="student epochs (default %(default)s)")
    p.add_argument("--lr", type=float, default=D.student_lr,
                   help="student encoder learning rate; the fresh head learns 10x faster (default %(default)s)")
    p.add_argument("--teacher-epochs", type=int, default=D.teacher_epochs,
                   help="teacher epochs; 0 = no teacher: the students learn from the "
                   "labels' own score distributions and nothing is augmented (the fast first run; "
                   "default %(default)s)")
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
    p.add_argument("--worth-min-count", type=int, default=D.worth_min_count,
                   help="weigh each label source's examples by what it is worth against behaviour on "
                        "pairs with at least this many co-clicks (a source at chance weighs ~0; 0 = "
                        "every source weighs 1; default %(default)s)")
    p.add_argument("--hard-negatives", type=int, default=D.hard_negatives,
                   help="per pair behaviour says goes together, this many same-category partners as "
                        "widely clicked that nobody co-clicked with it, as misfit examples "
                        "(training.dataset.hard_negatives; 0 = none; default %(default)s)")
    p.add_argument("--max-test", type=int, default=D.max_test,
                   help="evaluate and gate on at most this many held-out pairs, the same ones every run "
                        "(0 = all; each student scores every one of them: bounds CPU runs)")
