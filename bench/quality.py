"""``pairstream bench quality``: does the published score separate pairs that go together?

The whole default pipeline on data nobody tuned to, against its hidden truth, on either of two
generator families: ``streams.dev.marketplace`` (bestsellers, opaque categories, fit only in
free-text titles) and ``streams.dev.ecosystems`` (``--dataset ecosystems``: brand ecosystems,
fit only in the brand and model fields, log-normal popularity with daily trends):

1. ``stream``: items and clicks through the embedded broker, the real ``ClickIngest``
   (pair counts, user-item days, tier routing to ``pairs-to-score``);
2. ``label``: the routed pairs through the real ``Labeller`` with the configured backend
   (``heuristic`` by default: the figures say so);
3. ``train``: the round ``pairstream worker`` triggers, with ``DistillConfig``'s defaults
   (behaviour-derived soft labels from a fresh ``pair_stats``, hard negatives, students, ONNX,
   gate; a teacher only when ``--teacher`` names one);
4. ``publish``: the promoted students score the candidates, blended with behaviour;
5. ``evaluate``: ROC AUC against the truth on the frequent pairs (published candidates) of
   the published score, the model's score alone, the raw count, lift, Swing and the labels
   (on the labelled pairs); on long-tail pairs (co-clicked fewer than ``tier_low`` times,
   never published) through ``Serving.score_pairs``, the code behind ``POST /v1/pair-scores``,
   and on pairs of related kinds nobody co-clicked (fit vs misfit where behaviour says
   nothing), from the held-out splits only.

The truth is read in step 5 only.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from streams.core.storage.label_worth import roc_auc


def _stream(settings, broker, storage, items, clicks) -> dict:
    from bench.ingest import _produce
    from streams.ingest.catalogue import Catalogue
    from streams.ingest.consumer import ClickIngest

    catalogue = Catalogue()
    catalogue.upsert(storage, items)
    asyncio.run(_produce(broker.bootstrap, settings.topic_clicks,
                         [(c.user_id.encode(), c.to_json()) for c in clicks]))
    ingest = ClickIngest(settings, broker.bootstrap, storage, catalogue)

    async def go():
        await ingest.start()
        try:
            await ingest.run(until=lambda: ingest.totals["events"] >= len(clicks))
        finally:
            await ingest.stop()

    asyncio.run(go())
    return {"events": ingest.totals["events"], "routed": ingest.router.routed_total}


def _label(settings, broker, storage, routed: int) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.labelling.labeller import Labeller, build_scorer

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        consumer = AIOKafkaConsumer(settings.topic_pairs_to_score, bootstrap_servers=broker.bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await producer.start()
        await consumer.start()
        labeller = Labeller(settings, storage, build_scorer(settings), producer)
        seen, idle = 0, 0
        labelled: dict = {}
        try:
            while seen < routed and idle < 20:
                batches = await consumer.getmany(timeout_ms=500, max_records=200)
                messages = [(m.key, m.value) for ms in batches.values() for m in ms]
                idle = 0 if messages else idle + 1
                if messages:
                    report = await labeller.handle(messages)
                    seen += len(messages)
                    for source, n in report.labelled.items():
                        labelled[source] = labelled.get(source, 0) + n
        finally:
            await consumer.stop()
            await producer.stop()
        return {"routed_consumed": seen, "labels": labelled, "backend": labeller.backend_name}

    return asyncio.run(go())


def _long_tail(settings, storage, published_pairs: set, sample: int, seed: int) -> list[tuple[str, str]]:
    rows = storage.query_rows(
        f"SELECT item_a, item_b FROM {storage.table('pair_counts')} GROUP BY item_a, item_b "
        "HAVING sum(count) < {low:UInt64} ORDER BY item_a, item_b", {"low": settings.tier_low})
    pairs = [p for p in rows if p not in published_pairs]
    random.Random(seed).shuffle(pairs)
    return pairs[:sample]


def _dataset(args):
    """(items, clicks, compatible(a, b), related(a, b) or None, description) of the chosen
    dataset. The truth is in closures the evaluation step alone calls; ``related``: the two
    items' kinds go together (a device and an accessory of its kind), fit or not."""
    if args.dataset == "amazon-magazine":
        from bench import amazon

        items, clicks, also_bought = amazon.load()
        return items, clicks, lambda a, b: (min(a, b), max(a, b)) in also_bought, None, (
            f"amazon magazine reviews as sessions, truth also_buy ({len(also_bought)} pairs)")
    if args.dataset == "ecosystems":
        from streams.dev import ecosystems

        items, clicks, facts = ecosystems.generate(args.items, args.users, args.events, seed=args.seed)
        return items, clicks, lambda a, b: ecosystems.truth_compatible(facts[a], facts[b]), \
            lambda a, b: ecosystems.related(facts[a], facts[b]), f"brand-ecosystem marketplace (seed {args.seed})"
    from streams.dev import marketplace

    items, clicks, truth = marketplace.generate(args.items, args.users, args.events, seed=args.seed)

    def related(a: str, b: str) -> bool:
        x, y = truth[a].kind, truth[b].kind
        return marketplace.ACCESSORIES.get(y, ("",))[0] == x or marketplace.ACCESSORIES.get(x, ("",))[0] == y

    return items, clicks, lambda a, b: marketplace.truth_compatible(truth[a], truth[b]), related, (
        f"bestseller marketplace (seed {args.seed})")


def _never_co_clicked_related(storage, items, related, sample: int, seed: int) -> list[tuple[str, str]]:
    """Up to ``sample`` canonical pairs of related kinds that nobody co-clicked (no
    ``pair_counts`` row at all), drawn at random: fit vs misfit where behaviour says nothing.
    Only pairs of the held-out splits: training's hard negatives are never co-clicked pairs
    of the train split, so none of these was a training example."""
    from training import held_out

    rng = random.Random(seed)
    ids = sorted(i.item_id for i in items)
    seen = set(storage.query_rows(f"SELECT DISTINCT item_a, item_b FROM {storage.table('pair_counts')}"))
    out: set = set()
    for _ in range(sample * 200):
        if len(out) >= sample:
            break
        a, b = sorted(rng.sample(ids, 2))
        if (a, b) not in seen and related(a, b) and held_out(a, b):
            out.add((a, b))
    return sorted(out)


def precision_at(k: int, pairs, score, compatible) -> float:
    """Mean over anchor items with at least ``k`` published partners of the share of its top
    ``k`` partners by ``score`` that fit: what a re-ranker's top slots hold."""
    partners: dict = {}
    for (a, b), s in zip(pairs, score):
        partners.setdefault(a, []).append((s, b))
        partners.setdefault(b, []).append((s, a))
    shares = []
    for anchor, ranked in partners.items():
        if len(ranked) < k:
            continue
        top = sorted(ranked, key=lambda r: (-r[0], r[1]))[:k]
        shares.append(np.mean([compatible(*sorted((anchor, other))) for _, other in top]))
    return round(float(np.mean(shares)), 4) if shares else float("nan")


def run(args) -> dict:
    from models.blend import blend
    from streams.cli.training import distill_config
    from streams.core.config import Settings
    from streams.core.embedded_broker import EmbeddedBroker
    from streams.core.storage.chdb_client import ChdbStorage
    from streams.core.storage.labels import effective_labels
    from streams.core.storage.migrations import migrate
    from streams.core.storage.scores import SCORERS
    from streams.core.topics import ensure_topics
    from streams.publishing.publisher import publish
    from streams.retraining.launcher import refresh_stats
    from streams.serving.lookup import Serving
    from training import run as run_distillation

    started = time.time()
    steps: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pairstream-quality-") as tmp, EmbeddedBroker() as broker:
        settings = Settings.load(None).replace(data_dir=tmp, topic_partitions=4,
                                               kafka_bootstrap=broker.bootstrap)
        storage = ChdbStorage(f"{tmp}/chdb", "quality")
        migrate(storage)
        ensure_topics(broker.bootstrap, settings)
        items, clicks, compatible, related, source = _dataset(args)
        print(f"{source}: {len(items)} items, {len(clicks)} clicks")

        t = time.time()
        streamed = _stream(settings, broker, storage, items, clicks)
        steps["stream"] = time.time() - t
        print(f"streamed {streamed['events']} clicks, {streamed['routed']} pairs routed")

        t = time.time()
        labelled = _label(settings, broker, storage, streamed["routed"])
        steps["label"] = time.time() - t
        print(f"labelled with {labelled['backend']}: {labelled['labels']}")

        t = time.time()
        refresh_stats(storage, settings)
        result = run_distillation(storage, tmp, distill_config(args))
        steps["train"] = time.time() - t
        version = result.version
        print(f"trained {version}: promoted={result.promoted} "
              f"({result.metrics['n_train']} training pairs)")

        t = time.time()
        from models.runtime import Students
        from streams.core.storage import registry

        row = registry.get(storage, version)
        if row is None:
            raise RuntimeError(f"the run {version} wrote no registry row")
        students = Students(version, row["artifacts"], settings.onnx_threads)
        if args.cross_budget is not None:
            settings = settings.replace(publish_cross_budget_s=args.cross_budget)
        published = publish(storage, settings, students, progress=not args.json)
        steps["publish"] = time.time() - t

        t = time.time()
        ids, ev = published.ids, published.evidence
        pairs = [(ids[x], ids[y]) for x, y in zip(published.a.tolist(), published.b.tolist())]
        frequent = ev["count"] >= settings.tier_low
        crossed = published.scorer == SCORERS.index("cross_encoder")
        y_all = np.array([compatible(a, b) for a, b in pairs], bool)
        y = y_all[frequent]
        label_of = {(r["item_a"], r["item_b"]): (r["score"], r["source"]) for r in effective_labels(storage)}
        with_label = [k for k, p in enumerate(pairs) if frequent[k] and p in label_of]
        tail = _long_tail(settings, storage, set(pairs), args.long_tail, args.seed)
        serving = Serving(storage, settings)
        serving.current = serving.build()
        answers = asyncio.run(serving.score_pairs(tail))["results"]
        tail_scored = [(p, r["score"]) for p, r in zip(tail, answers) if r["score"] is not None]
        y_tail = [compatible(a, b) for (a, b), _ in tail_scored]
        never = _never_co_clicked_related(storage, items, related, args.long_tail, args.seed) if related else []
        never_answers = asyncio.run(serving.score_pairs(never))["results"] if never else []
        never_scored = [(p, r["score"]) for p, r in zip(never, never_answers) if r["score"] is not None]
        y_never = [compatible(a, b) for (a, b), _ in never_scored]
        # the same pairs where neither item was in any training example: the students read
        # items they never saw (the run lists the ones it saw)
        seen = set(Path(row["artifacts"]["trained_items"]).read_text().split())
        cold = [(p, s) for p, s in never_scored if p[0] not in seen and p[1] not in seen]
        y_cold = [compatible(a, b) for (a, b), _ in cold]
        from training import held_out
        held = np.array([held_out(a, b) for a, b in pairs], bool)
        frequent_pairs = [p for k, p in enumerate(pairs) if frequent[k]]
        steps["evaluate"] = time.time() - t
        storage.close()

    out = {
        "dataset": args.dataset, "source": source, "items": len(items), "events": len(clicks),
        "backend": labelled["backend"], "labels": labelled["labels"],
        "frequent_pairs": int(frequent.sum()), "frequent_positive_rate": round(float(y.mean()), 4),
        "auc_published": roc_auc(y, published.score[frequent]),
        # the model alone only on pairs no training run fitted on (validation and test splits)
        "auc_model": roc_auc(y_all[frequent & held], ev["model_score"][frequent & held]),
        "model_held_out_pairs": int((frequent & held).sum()),
        # the same blend with the configured k instead of the fitted one: what the fit changed
        "auc_published_configured_k": roc_auc(y, blend(ev["model_score"], ev["lift"], ev["count"],
                                                       settings.blend_evidence_count)[0][frequent]),
        "blend": published.summary["blend"],
        # the cross-encoder's measured share of the pairs it rescored (streams.publishing.cross_mix)
        "cross_mix": published.summary["cross_mix"],
        "auc_count": roc_auc(y, ev["count"][frequent]),
        "auc_lift": roc_auc(y, ev["lift"][frequent]),
        "auc_swing": roc_auc(y, ev["swing"][frequent]),
        # the model score among the pairs the cross-encoder rescored (the rest: the two-tower)
        "auc_model_cross_rescored": roc_auc(y_all[frequent & crossed], ev["model_score"][frequent & crossed]),
        "cross_rescored_frequent": int((frequent & crossed).sum()),
        "auc_labels": roc_auc(y_all[with_label], [label_of[pairs[k]][0] for k in with_label]),
        "labelled_pairs": len(with_label),
        "auc_long_tail": roc_auc(y_tail, [s for _, s in tail_scored]),
        "long_tail_pairs": len(tail_scored),
        "long_tail_positive_rate": round(float(np.mean(y_tail)), 4) if y_tail else None,
        # fit vs misfit where behaviour says nothing: related kinds, never co-clicked
        "auc_long_tail_related": roc_auc(y_never, [s for _, s in never_scored]) if never_scored else float("nan"),
        "long_tail_related_pairs": len(never_scored),
        "auc_long_tail_related_unseen_items": roc_auc(y_cold, [s for _, s in cold]) if cold else float("nan"),
        "long_tail_related_unseen_pairs": len(cold),
        "trained_items": len(seen),
        "precision_at_5": precision_at(5, frequent_pairs, published.score[frequent], compatible),
        "precision_at_5_lift": precision_at(5, frequent_pairs, ev["lift"][frequent], compatible),
        # the ceiling: the truth itself as the score (anchors with fewer than 5 fitting
        # partners among their frequent pairs cannot fill 5 slots with fits)
        "precision_at_5_oracle": precision_at(5, frequent_pairs, y.astype(float), compatible),
        "behaviour_dominant": published.summary.get("behaviour_dominant"),
        "model_version": version, "promoted": result.promoted,
        "steps_min": {k: round(v / 60, 2) for k, v in steps.items()},
        "minutes": round((time.time() - started) / 60, 2),
    }
    for key, value in list(out.items()):
        if key.startswith("auc_"):
            out[key] = round(value, 4)
    print("quality (ROC AUC vs hidden truth): " + ", ".join(
        f"{k[4:]} {v}" for k, v in out.items() if k.startswith("auc_")) + f"; {out['minutes']} min")
    return out
