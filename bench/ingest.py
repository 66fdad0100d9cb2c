"""``pairstream bench ingest``: end-to-end ingest against raw aiokafka, in one run.

1. Generate N clicks, produce them to a fresh topic on the embedded broker.
2. Baseline: an aiokafka consumer group reads them with ``getmany`` and decodes each with
   orjson (the first plan assumed 178k/s), timed from the first to the last message; the
   median of three such reads, each in a new group. A second baseline reads the same way
   with the ingest's reader settings (``streams.ingest.kafka_reader``: parsed records without
   ``ConsumerRecord``, no prefetch back-off, short fetch waits): ``ratio_vs_tuned_raw`` is what
   the ingest's own work costs, apart from how it reads.
3. The ingest (``ClickIngest``, the code the Faust worker runs) reads the same topic in its
   own group: decode, validate, pair, aggregate, write ClickHouse, route tiers, checkpoint,
   commit; timed the same way. ``ratio`` = ingest rate / baseline rate.
4. ``exact``: ``pair_counts`` equals the reference computation over the same input.
5. Memory: the resident memory the ingest added to this process (sampled at each batch,
   against the process before the ingest started: the harness's own clicks are not counted).
   ``peak_rss_mb`` is the whole bench process's peak. A worker's RSS over time:
   ``pairstream bench memory``.
6. Freshness: clicks offered at a fixed rate (default 10k/s) with ``ts`` = send time; each
   event's click-to-visible delay is taken when its batch's ``pair_counts`` write returns.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence

import numpy as np
import orjson

from streams.core.config import Settings
from streams.core.produce import send_batched
from streams.core.storage.chdb_client import ChdbStorage
from streams.core.storage.migrations import migrate
from streams.core.topics import ensure_topics
from streams.dev.synthetic import generate
from streams.ingest import kafka_reader
from streams.ingest.catalogue import Catalogue
from streams.ingest.consumer import ClickIngest
from streams.ingest.reference import reference_counts
from streams.worker import embedded_broker


async def _produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes | None]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=512 * 1024)
    await producer.start()
    try:  # keyed like the real producer: murmur2 of user_id decides the partition
        await send_batched(producer, topic, ((k, v, None) for k, v in messages))
    finally:
        await producer.stop()


async def _raw_consume(bootstrap: str, topic: str, total: int, tuned: bool = False,
                       fetch_wait_ms: int = kafka_reader.FETCH_MAX_WAIT_MS) -> float:
    """Events/s of a plain aiokafka read (``tuned``: read the way the ingest reads, see
    ``streams.ingest.kafka_reader``, with the fetch wait the log needs)."""
    from aiokafka import AIOKafkaConsumer

    options = (kafka_reader.consumer_options(fetch_wait_ms) if tuned
               else {"fetch_max_bytes": 64 << 20, "max_partition_fetch_bytes": 16 << 20})
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
        heartbeat_interval_ms=1000, **options)
    await consumer.start()
    if tuned:
        kafka_reader.tune(consumer)
    seen, first = 0, time.perf_counter()  # reset at the first consumed batch
    first_seen = False
    loads = orjson.loads
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=250, max_records=20000)
            for messages in batches.values():
                if not first_seen:
                    first, first_seen = time.perf_counter(), True
                for msg in messages:
                    loads(msg.value)
                seen += len(messages)
            if tuned:
                await kafka_reader.let_reads_run()
        await consumer.commit()
    finally:
        await consumer.stop()
    return total / (time.perf_counter() - first)


def run(args) -> dict:
    n_events = args.events
    log_kind = getattr(args, "log", "memory")
    with tempfile.TemporaryDirectory(prefix="pairstream-bench-") as tmp, \
            embedded_broker(Settings(data_dir=tmp, embedded_log=log_kind)) as broker:
        settings = Settings(data_dir=tmp, topic_partitions=4, embedded_log=log_kind)
        storage = ChdbStorage(f"{tmp}/chdb", "bench")
        migrate(storage)
        ensure_topics(broker.bootstrap, settings)
        n_items, n_users = max(2000, n_events // 100), max(500, n_events // 50)
        items, clicks = generate(n_items, n_users, n_events, seed=1)
        catalogue = Catalogue()
        catalogue.upsert(storage, items)
        # as in a worker: the items are on their topic too, and the ingest follows it (its
        # clicks wait for the items created before them: streams.ingest.catalogue_follower)
        listings = [(i.item_id.encode(), i.to_json()) for i in items]
        asyncio.run(_produce(broker.bootstrap, settings.topic_items, listings))
        messages = [(c.user_id.encode(), c.to_json()) for c in clicks]
        asyncio.run(_produce(broker.bootstrap, settings.topic_clicks, messages))
        print(f"produced {n_events} clicks ({n_items} items, {n_users} users)")
        # the harness's own heap (the generated clicks, held for the exactness check) is not
        # the ingest's: out of the cyclic GC's sight for the raw consumer and the ingest alike
        gc.freeze()

        # a read of 100k-1M events takes 0.2-2 s and one run can be off by a third: the
        # median of three runs (each its own group) is the baseline
        raw_rates = [asyncio.run(_raw_consume(broker.bootstrap, settings.topic_clicks, n_events))
                     for _ in range(RAW_RUNS)]
        raw_rate = float(np.median(raw_rates))
        print(f"raw aiokafka getmany + orjson: {raw_rate:,.0f} events/s "
              f"(median of {', '.join(f'{r:,.0f}' for r in raw_rates)})")
        # the same read with the ingest's reader settings: what the ingest's own work costs,
        # apart from how it reads
        wait_ms = settings.fetch_wait_ms(kafka_reader.FETCH_MAX_WAIT_MS)
        tuned_rates = [asyncio.run(_raw_consume(broker.bootstrap, settings.topic_clicks, n_events, tuned=True,
                                                fetch_wait_ms=wait_ms)) for _ in range(RAW_RUNS)]
        tuned_rate = float(np.median(tuned_rates))
        print(f"raw read as the ingest reads (kafka_reader): {tuned_rate:,.0f} events/s "
              f"(median of {', '.join(f'{r:,.0f}' for r in tuned_rates)})")

        marks: dict[str, float] = {}
        rss_before = _rss_mb()
        marks["rss"] = rss_before

        def on_batch(report) -> None:
            marks["last"] = time.perf_counter()
            marks["rss"] = max(marks["rss"], _rss_mb())

        ingest = ClickIngest(settings, broker.bootstrap, storage, catalogue, on_batch=on_batch, follow_items=True)

        async def go():
            await ingest.start()
            try:
                await ingest.run(until=lambda: ingest.totals["events"] >= n_events)
            finally:
                stopping = time.perf_counter()
                await ingest.stop()  # the last checkpoint: routing and sessions of the tail
                marks["stop"] = time.perf_counter() - stopping

        asyncio.run(go())
        # like the baseline: from the first consumed message to the last batch written
        if ingest.first_message_at is None:
            raise RuntimeError("the ingest consumed nothing")
        seconds = marks["last"] - ingest.first_message_at
        rate = n_events / seconds
        print(f"ingest (Kafka -> pairs -> ClickHouse): {rate:,.0f} events/s "
              f"= {rate / raw_rate:.2f}x raw, {rate / tuned_rate:.2f}x the reader-tuned raw; "
              f"then the final checkpoint {marks['stop']:.2f}s; "
              f"memory the ingest added {marks['rss'] - rss_before:,.0f} MB")

        rows = storage.query_rows(
            f"SELECT item_a, item_b, toUInt32(day), sum(count) FROM {storage.table('pair_counts')} "
            f"GROUP BY item_a, item_b, day")
        got = {(a, b, d): n for a, b, d, n in rows}
        expected = reference_counts([(c.user_id, c.item_id, c.ts) for c in clicks],
                                    {i.item_id: i.category for i in items})
        exact = got == dict(expected)
        print(f"exact against the reference: {exact} ({len(got)} pair-day rows)")

        freshness = _freshness(broker, storage, catalogue, items, settings, args.fresh_events, args.fresh_rate)
        print(f"freshness at {args.fresh_rate:,.0f} events/s offered: p50 "
              f"{freshness['p50']:.3f}s, p99 {freshness['p99']:.3f}s")
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        storage.close()
    return {
        "log": log_kind,
        "events": n_events,
        "seconds": round(seconds, 3),
        "events_per_s": round(rate),
        "raw_consume_per_s": round(raw_rate),
        "raw_runs_per_s": [round(r) for r in raw_rates],
        "ratio": round(rate / raw_rate, 3),
        "raw_tuned_consume_per_s": round(tuned_rate),
        "raw_tuned_runs_per_s": [round(r) for r in tuned_rates],
        "ratio_vs_tuned_raw": round(rate / tuned_rate, 3),
        "final_checkpoint_s": round(marks["stop"], 3),
        "ingest_added_rss_mb": round(marks["rss"] - rss_before, 1),
        "freshness_p50_s": round(freshness["p50"], 4),
        "freshness_p99_s": round(freshness["p99"], 4),
        "freshness_offered_per_s": args.fresh_rate,
        "pairs_written": int(sum(expected.values())) if exact else int(sum(got.values())),
        "pair_day_rows": len(got),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "exact": exact,
    }


RAW_RUNS = 3


def _rss_mb() -> float:
    """This process's resident memory now (Linux ``/proc``), in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _freshness(broker, storage, catalogue, items, settings, n_events: int, rate: float) -> dict:
    settings = settings.replace(topic_clicks=f"fresh-{uuid.uuid4().hex[:6]}")
    ensure_topics(broker.bootstrap, settings)
    delays: list[float] = []

    def on_batch(report) -> None:
        now = report.written_at
        delays.extend(now - ts for ts in report.event_times)

    def offer() -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=2)
        ids = [item.item_id for item in items]
        rng = np.random.default_rng(5)
        start = time.time()
        for i in range(n_events):
            target = start + i / rate
            pause = target - time.time()
            if pause > 0:
                time.sleep(pause)
            user = f"f{rng.integers(0, 2000)}"
            value = orjson.dumps({"event_id": f"f{i}", "user_id": user,
                                  "item_id": ids[int(rng.integers(0, len(ids)))], "ts": time.time()})
            producer.send(settings.topic_clicks, key=user.encode(), value=value)
        producer.flush()
        producer.close()

    ingest = ClickIngest(settings, broker.bootstrap, storage, catalogue, on_batch=on_batch, follow_items=True)

    async def go():
        await ingest.start()
        # start offering once the group has assigned partitions, so joining is not counted
        while not ingest.partitions:
            await asyncio.sleep(0.05)
            await ingest.poll_once(50)
        producer = threading.Thread(target=offer, daemon=True)
        producer.start()
        try:
            await ingest.run(until=lambda: ingest.totals["events"] >= n_events)
        finally:
            await ingest.stop()
        producer.join()

    asyncio.run(go())
    values = np.array(delays)
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}
