"""``pairstream demo``: the whole system on the embedded defaults, with a live view.

generator -> replay -> Kafka -> Faust worker (ingest, tiers, labelling) -> ClickHouse ->
one distillation round in a child process (the worker's real training path) -> publish ->
hot reload -> lookup API -> summary (top partners with per-dimension reasons, lag table, model
metrics, the HTML report, a timeline of the steps) -> what to try next, with the worker still
serving until Ctrl-C (``--exit``: stop after the summary). Leaves no process behind: the broker,
the worker and the training child are all stopped on exit and on Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from streams.core.config import Settings
from streams.core.embedded_broker import free_port
from streams.core.storage import tiers
from streams.worker import stack

if TYPE_CHECKING:
    from streams.app import WorkerContext

# a CPU round that fits the demo's five minutes: 400 labels, the teacher's 10 epochs (a from-scratch
# teacher needs them), one student epoch, and 500 held-out pairs scored by each model (all 3,300
# took ~95 s of the round)
DEMO_TRAINING = ("--teacher tiny --epochs 1 --teacher-epochs 10 --augment 1 --max-labels 400 --max-test 500 "
                 "--max-length 64")
DEMO_CROSS_BUDGET_S = 10.0  # the publish's cross-encoder rescoring: ~110 pairs a second here

# what each step buys, for the timeline at the end of the summary
STEPS = {
    "generate": "a synthetic marketplace: items, clicks, the hidden truth",
    "stack": "the embedded Tansu broker, chDB, the topics",
    "worker": "the Faust worker: ingest, tiers, labeller, serving, web",
    "stream": "clicks -> exact pair counts in ClickHouse, tier crossings routed",
    "label": "routed pairs -> five-dimension labels (heuristic backend unless --llm)",
    "distil": "teacher -> cross-encoder + two-tower students -> ONNX -> gate",
    "publish": "students score candidate pairs, blended with behaviour; a new score version",
    "reload": "model-updates -> the worker swaps its students and index",
    "lookup": "the lookup API over HTTP",
}


def run_demo(settings: Settings, args) -> int:
    import logging

    from streams.dev.replay import replay
    from streams.dev.synthetic import write_dataset

    # the replay thread's kafka-python producer warns whenever the ingest holds the GIL for a
    # moment; in the demo's live view that is noise, not news
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    data_dir = Path(settings.data_dir)
    if settings.embedded_clickhouse and settings.chdb_path.exists():
        shutil.rmtree(settings.chdb_path)  # the embedded broker starts empty: so do the tables
    if settings.durable_log and (data_dir / "log" / "s3").exists():
        shutil.rmtree(data_dir / "log" / "s3")  # a durable one too: a demo is a fresh marketplace
    settings = settings.replace(
        web_port=free_port(),
        lookup_port=free_port() if settings.lookup_port else 0,
        training_args=settings.training_args or (DEMO_TRAINING + ("" if args.backbone == "minilm" else
                                                                  f" --backbone {args.backbone} --teacher-epochs 2")),
        training_first_args="",  # its one run is its own configuration, not the fast first run
        # its replay ends before the run: refreshes would have nothing to follow, and under a
        # loaded machine's test suite they slowed the demo's Ctrl-C past its 60 s bound
        publish_refresh_s=0.0,
        training_min_new_labels=10**9, training_interval_s=0,  # the demo starts its one run itself
        publish_cross_budget_s=min(settings.publish_cross_budget_s, DEMO_CROSS_BUDGET_S))
    out = data_dir / "demo-data"
    timeline: dict[str, float] = {}
    t0 = time.time()
    counts = write_dataset(out, args.items, args.users, args.events, args.seed)
    timeline["generate"] = time.time() - t0
    print(f"[1/6] generated {counts['items']} items, {counts['clicks']} clicks, "
          f"{counts['truth_pairs']} truth pairs in {out} ({timeline['generate']:.1f}s)")
    t0 = time.time()
    with stack(settings) as (bootstrap, storage):
        timeline["stack"] = time.time() - t0
        print(f"[2/6] embedded stack up: Kafka {bootstrap}, chDB {settings.chdb_path}, "
              f"web :{settings.web_port}")
        replay_error: list[BaseException] = []
        stop_replay = threading.Event()

        def produce() -> None:
            try:
                replay(bootstrap, out / "clicks.jsonl", out / "items.jsonl",
                       settings.topic_clicks, settings.topic_items, progress=False, stop=stop_replay)
            except BaseException as exc:  # noqa: BLE001 - reported below
                replay_error.append(exc)

        producer = threading.Thread(target=produce, name="replay", daemon=True)
        summary: dict = {"timeline": timeline}
        try:
            asyncio.run(_pipeline(settings, bootstrap, storage, counts["clicks"], producer.start, summary,
                                  serve=not args.exit))
        except KeyboardInterrupt:
            if not summary.get("printed"):
                print("\ninterrupted: the worker, the training child and the replay are stopped; "
                      "the broker and chDB follow", file=sys.stderr)
                return 130
            print("\nstopped: the worker, the broker and chDB are down", flush=True)
        finally:
            stop_replay.set()
            if producer.is_alive():
                producer.join(timeout=10)
        if replay_error:
            print(f"replay failed: {replay_error[0]}", file=sys.stderr)
            return 1
    return 0 if summary.get("training", {}).get("status") == "succeeded" else 1


async def _pipeline(settings: Settings, bootstrap: str, storage, expected: int, start_replay, summary: dict,
                    serve: bool) -> None:
    """Start the worker, then the replay (so the worker's start-up does not share the GIL with
    it), run the steps, print the summary and, with ``serve``, keep the worker serving until
    Ctrl-C; stop the worker whatever happens: a Ctrl-C during ``app.start()`` would otherwise
    leave its non-daemon consumer thread, and the process, running."""
    from streams.app import create_app

    app = create_app(settings, bootstrap, storage, web=True)
    started = time.time()
    timeline = summary["timeline"]
    try:
        await app.start()
        timeline["worker"] = time.time() - started
        start_replay()
        context = app.context
        summary["stream"] = await _stream(context, expected, timeline)
        summary["training"] = await _train(context, settings, timeline)
        mark = time.time()
        summary["lookup"] = await _lookup(context, settings)
        timeline["lookup"] = time.time() - mark
        summary["lag"] = await asyncio.to_thread(_lag_rows, context, settings)
        summary["seconds"] = round(time.time() - started + timeline["generate"] + timeline["stack"], 1)
        await asyncio.to_thread(_print_summary, storage, settings, summary)
        summary["printed"] = True
        if serve and summary["training"].get("status") == "succeeded":
            _print_next_steps(settings, bootstrap, summary)
            await asyncio.Event().wait()  # until Ctrl-C (asyncio.run cancels this task)
    finally:
        await asyncio.wait_for(app.stop(), timeout=60)


async def _stream(context: WorkerContext, expected: int, timeline: dict[str, float]) -> dict:
    """[3/6] clicks -> pairs -> tiers -> labels, with a live view."""
    started = time.time()
    with tqdm(total=expected, desc="[3/6] streaming", unit="ev") as bar:
        while True:
            await asyncio.sleep(0.5)
            now = context.progress()
            bar.n = now.events
            bar.set_postfix(ev_s=f"{now.events / max(time.time() - started, 1e-9):,.0f}",
                            lag=now.lag, pairs=now.pair_rows, labels=now.labelled)
            bar.refresh()
            if now.events >= expected or time.time() - started > 600:
                break
    if context.ingest is not None:
        await context.ingest.checkpoint()  # route what the last batches touched
        await context.ingest.drain()
    streamed = context.progress()
    timeline["stream"] = time.time() - started
    labelling = time.time()
    routed = streamed.routed
    with tqdm(total=routed, desc="      labelling", unit="pair") as bar:
        deadline = time.time() + 300
        while context.progress().labelled < routed and time.time() < deadline:
            await asyncio.sleep(0.5)
            bar.n = context.progress().labelled
            bar.refresh()
        bar.n = context.progress().labelled
        bar.refresh()
    timeline["label"] = time.time() - labelling
    return {"events": streamed.events, "invalid": streamed.invalid, "pair_rows": streamed.pair_rows,
            "routed": routed, "labelled": context.progress().labelled,
            "seconds": round(time.time() - started, 1)}


async def _train(context: WorkerContext, settings: Settings, timeline: dict[str, float]) -> dict:
    """[4/6] one distillation round in a child process, then [5/6] publish and hot reload."""
    launcher = context.launcher
    if launcher is None:
        raise RuntimeError("the worker's training part has not started")
    run_id = await launcher.launch("demo")
    if run_id is None:  # the worker's own trigger started one first: the demo trains no second
        return {"status": "failed", "error": "a training run is already in progress", "log": None}
    run_dir = Path(settings.data_dir) / "runs" / run_id
    log_path = run_dir / "train.log"
    started = time.time()
    distilled_at = None
    with tqdm(desc="[4/6] distilling (child process)", bar_format="{desc}: {elapsed} {postfix}") as bar:
        while launcher.busy:
            await asyncio.sleep(1.0)
            if distilled_at is None and (run_dir / "result.json").exists():
                distilled_at = time.time()
            bar.set_postfix_str(_doing(log_path, distilled_at is not None)[:80])
            bar.refresh()
    outcome = launcher.last or {"status": "failed", "error": "no outcome"}
    timeline["distil"] = (distilled_at or time.time()) - started
    timeline["publish"] = time.time() - (distilled_at or time.time())
    outcome["log"] = str(log_path)
    if outcome["status"] != "succeeded":
        print(f"training failed: {outcome.get('error')}", file=sys.stderr)
        return outcome
    if outcome.get("promoted"):
        reloading = time.time()
        deadline = reloading + 30  # the hot reload arrives through model-updates
        while context.serving.current.model_version != outcome["model_version"] and time.time() < deadline:
            await asyncio.sleep(0.2)
        timeline["reload"] = time.time() - reloading
        pub = outcome.get("publish", {})
        print(f"[5/6] published {pub.get('score_version')}: {pub.get('pairs')} pairs of "
              f"{pub.get('items')} items ({pub.get('cross_rescored')} rescored by the cross-encoder, "
              f"its share {pub.get('cross_mix', {}).get('weight')}) "
              f"in {pub.get('seconds')}s; workers now serve {context.serving.current.model_version}")
    outcome["train_seconds"] = round(time.time() - started, 1)
    return outcome


def _doing(path: Path, distilled: bool) -> str:
    """What the run is doing: the newest step or epoch line of its log, without the log prefix
    (teacher epochs, students, export and parity, quantisation, registry), then the publish."""
    if distilled:
        return "publishing: students score the candidate pairs, then model-updates"
    try:
        text = path.read_bytes()[-4000:].decode(errors="replace")
    except OSError:
        return "starting: table snapshot, child process"
    for line in reversed(text.splitlines()):
        step = re.match(r"^\S+ \S+ INFO training\.\w+: (.*)$", line)
        if step:
            return step.group(1)
    return "starting: table snapshot, child process"


async def _lookup(context: WorkerContext, settings: Settings) -> dict:
    """[6/6] the lookup API, over real HTTP: a few items' best partners and their scores."""
    import aiohttp

    index = context.serving.current.index
    if not len(index):
        return {}
    counts = np.diff(index.offsets)
    anchors = [index.ids[i] for i in np.argsort(-counts)[:3]]
    base = _lookup_base(settings)
    out: dict = {"base": base, "items": {}}
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        deadline = time.monotonic() + 60  # the lookup process maps the worker's export in ms to seconds
        while time.monotonic() < deadline:
            async with session.get(f"{base}/v1/items/{anchors[0]}/partners", params={"k": "5"}) as r:
                if r.status == 200 and (await r.json())["score_version"] == index.score_version:
                    break
            await asyncio.sleep(0.2)
        for item in anchors:
            async with session.get(f"{base}/v1/items/{item}/partners", params={"k": "5"}) as r:
                out["items"][item] = (await r.json())["partners"]
        pairs = [[item, p["item_id"]] for item in anchors for p in out["items"][item][:2]]
        started = time.perf_counter()
        async with session.post(f"{base}/v1/pair-scores", json={"pairs": pairs}) as r:
            out["pair_scores"] = await r.json()
        out["pair_scores_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return out


def _lag_rows(context: WorkerContext, settings: Settings) -> list[dict]:
    from streams.ops.lag import LagSampler

    sampler = LagSampler(context.bootstrap)
    try:
        groups = [settings.app_id, f"{settings.app_id}-ingest"]
        for _ in range(2):
            sampler.sample(groups)
            time.sleep(1.0)
        return sampler.table(10)
    finally:
        sampler.close()


def _print_summary(storage, settings: Settings, summary: dict) -> None:
    from streams.ops.lag import format_table

    stream, training = summary["stream"], summary.get("training", {})
    print("\n=== summary ===")
    print("stream: " + ", ".join(f"{k}={v}" for k, v in stream.items()))
    _print_top_pairs(storage)
    _print_labels(storage)
    lookup = summary.get("lookup") or {}
    if lookup:
        reasons = _reasons(storage, [(a, p["item_id"]) for a, ps in lookup["items"].items() for p in ps])
        titles = _titles(storage, list(lookup["items"]) + [p["item_id"] for ps in lookup["items"].values() for p in ps])
        print(f"\ntop partners from the lookup API ({lookup['base']}/v1/items/ID/partners?k=5):")
        for item, partners in lookup["items"].items():
            print(f"  {item} {titles.get(item, '')[:50]}")
            for p in partners:
                print(f"     {p['score']:5.2f} [{p['scorer']}] {p['item_id']} {titles.get(p['item_id'], '')[:45]}")
                for dim, reason in reasons.get(tuple(sorted((item, p['item_id']))), {}).items():
                    print(f"            {dim:9} {reason[:80]}")
        ps = lookup["pair_scores"]
        print(f"POST /v1/pair-scores for {len(ps['results'])} pairs: model {ps['model_version']}, "
              f"{lookup['pair_scores_ms']} ms")
    print("\nconsumer lag:")
    print(format_table(summary.get("lag", [])))
    metrics = training.get("metrics") or {}
    if metrics:
        print("\nmodel (held-out test split):")
        for name in ("teacher", "cross", "two_tower"):
            m = metrics.get(name, {})
            print(f"  {name:9} Spearman vs labels {m.get('spearman_vs_labels', float('nan')):.3f}, "
                  f"vs teacher {m.get('spearman_vs_teacher', float('nan')):.3f}, "
                  f"NDCG@10 {m.get('ndcg10', float('nan')):.3f}")
        print(f"  promoted: {training.get('promoted')}, version {training.get('model_version')}, "
              f"training {training.get('seconds')}s")
    report = (training.get("report") or {}).get("html")
    print(f"\nreport: {report or 'none (training did not finish: ' + str(training.get('log')) + ')'}")
    print("\ntimeline (where the time went, and what each step buys):")
    for step, seconds in summary["timeline"].items():
        print(f"  {step:9} {seconds:6.1f}s  {STEPS.get(step, '')}")
    print(f"demo finished in {summary['seconds']}s")


def _lookup_base(settings: Settings) -> str:
    """Where a re-ranker asks: the lookup processes' port (the worker's web port without them)."""
    return f"http://127.0.0.1:{settings.lookup_port or settings.web_port}"


def _print_next_steps(settings: Settings, bootstrap: str, summary: dict) -> None:
    """What a newcomer does next, against the worker that is still running."""
    base = f"http://127.0.0.1:{settings.web_port}"
    lookups = _lookup_base(settings)
    items = list((summary.get("lookup") or {}).get("items", {}).items())
    item, partners = items[0] if items else ("ITEM_ID", [])
    other = partners[0]["item_id"] if partners else "OTHER_ITEM_ID"
    auth = ' -H "Authorization: Bearer $PAIRSTREAM_API_TOKEN"' if settings.api_token else ""
    print(f"""
=== next: the worker is still running ===
  partners:  curl -s{auth} '{lookups}/v1/items/{item}/partners?k=5'
  a pair:    curl -s{auth} -X POST {lookups}/v1/pair-scores -H 'Content-Type: application/json' \\
               -d '{{"pairs": [["{item}", "{other}"]]}}'
  lag:       PAIRSTREAM_KAFKA_BOOTSTRAP={bootstrap} pairstream lag
  status:    {base}/status   (metrics: {base}/metrics{"; both want the token" if auth else ""})
  stop:      Ctrl-C (the worker, the broker and chDB stop with it; `pairstream demo --exit` stops here)""",
          flush=True)


def _reasons(storage, pairs) -> dict:
    from streams.core.storage.labels import effective_labels

    wanted = sorted({tuple(sorted(p)) for p in pairs})
    rows = effective_labels(storage, "(item_a, item_b) IN arrayZip({a:Array(String)}, {b:Array(String)})",
                            {"a": [a for a, _ in wanted], "b": [b for _, b in wanted]}) if wanted else []
    return {(r["item_a"], r["item_b"]): r["dim_reasons"] for r in rows}


def _titles(storage, ids) -> dict:
    from streams.core.storage.items import products

    return {k: v["title"] for k, v in products(storage, sorted(set(ids))).items()}


def _print_top_pairs(storage) -> None:
    rows = storage.query_rows(
        f"""SELECT c.item_a, c.item_b, sum(c.count) AS n,
                   any(ia.title) AS ta, any(ib.title) AS tb
            FROM {storage.table('pair_counts')} AS c
            LEFT JOIN {storage.table('items')} AS ia ON ia.item_id = c.item_a
            LEFT JOIN {storage.table('items')} AS ib ON ib.item_id = c.item_b
            GROUP BY c.item_a, c.item_b ORDER BY n DESC LIMIT 10""")
    routed = tiers.routed_by_tier(storage)
    print("\nmost frequent cross-category pairs:")
    for _a, _b, n, ta, tb in rows:
        print(f"  {n:6d}  {ta[:40]:40s} + {tb[:40]}")
    print("pairs routed to scoring by tier: " + ", ".join(f"{t}={n}" for t, n in routed.items()))


def _print_labels(storage) -> None:
    from streams.core.storage.labels import effective_labels

    rows = effective_labels(storage)
    by_source: dict[str, int] = {}
    for row in rows:
        by_source[row["source"]] = by_source.get(row["source"], 0) + 1
    print("labels by source: " + (", ".join(f"{k}={v}" for k, v in sorted(by_source.items())) or "none"))
    scored = sorted((r for r in rows if r["dim_scores"]), key=lambda r: -r["score"])[:3]
    for row in scored:
        print(f"  {row['item_a']} + {row['item_b']}: {row['score']:.2f} "
              f"(backend={row['backend']}, tier {row['tier']})")
        for dim, value in row["dim_scores"].items():
            print(f"      {dim:10} {value:4.1f}  {row['dim_reasons'].get(dim, '')}")
