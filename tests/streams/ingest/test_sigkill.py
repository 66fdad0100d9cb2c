"""A real worker process (``pairstream worker``) killed with SIGKILL mid-stream, then restarted.

The in-process crash tests in ``test_ingest`` stop the ingest after chosen writes; this one
kills the whole OS process wherever it happens to be, with chDB's files and Kafka's group
state left as a real crash leaves them, and checks ``pair_counts`` against the reference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from kafka import KafkaAdminClient

from streams.core.storage.stats import StatsParams
from streams.core.topics import ensure_topics
from streams.dev.synthetic import write_dataset
from streams.ingest.reference import reference_counts, reference_stats, reference_visits
from tests.streams.ingest.test_stats import assert_stats_equal

SEED_CATALOGUE = """
import sys
from streams.ingest.catalogue import Catalogue
from streams.core.config import Settings
from streams.core.events import parse_item
from streams.core.storage import open_storage
storage = open_storage(Settings.load(None))
Catalogue().upsert(storage, [parse_item(line) for line in open(sys.argv[1], "rb") if line.strip()])
storage.close()
"""

DUMP_COUNTS = """
import json
from streams.core.config import Settings
from streams.core.storage import open_storage
storage = open_storage(Settings.load(None))
rows = storage.query_rows(
    f"SELECT item_a, item_b, toUInt32(day), sum(count) FROM {storage.table('pair_counts')} "
    "GROUP BY item_a, item_b, day")
visits = storage.query_rows(
    f"SELECT user_id, item_id, toUInt32(day), sum(clicks) FROM {storage.table('user_item_days')} "
    "GROUP BY user_id, item_id, day")
from streams.core.storage import stats
stats.refresh(storage, stats.StatsParams())
pair_stats = stats.latest(storage).to_pylist()
print(json.dumps({"counts": [[a, b, int(d), int(n)] for a, b, d, n in rows],
                  "visits": [[u, i, int(d), int(n)] for u, i, d, n in visits],
                  "stats": pair_stats}))
storage.close()
"""


def _env(settings, bootstrap):
    env = dict(os.environ)
    env.update({
        "PAIRSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "PAIRSTREAM_DATA_DIR": settings.data_dir,
        "PAIRSTREAM_APP_ID": settings.app_id,
        "PAIRSTREAM_TOPIC_CLICKS": settings.topic_clicks,
        "PAIRSTREAM_TOPIC_ITEMS": settings.topic_items,
        "PAIRSTREAM_TOPIC_CLICKS_DLQ": settings.topic_clicks_dlq,
        "PAIRSTREAM_TOPIC_PAIRS_TO_SCORE": settings.topic_pairs_to_score,
        "PAIRSTREAM_TOPIC_PAIRS_TO_SCORE_DLQ": settings.topic_pairs_to_score_dlq,
        "PAIRSTREAM_INGEST_BATCH_EVENTS": "300",  # many small batches: the kill lands mid-stream
        "PAIRSTREAM_CHECKPOINT_INTERVAL_S": "0.3",
        "PAIRSTREAM_SESSION_TIMEOUT_S": str(settings.session_timeout_s),  # a killed member expires sooner
    })
    return env


def _python(code, env, *args):
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _committed(admin, group, topic):
    offsets = admin.list_group_offsets(group).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0}


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def _start_worker(env, log_path):
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--no-web"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.timeout(240)
def test_sigkill_mid_stream_then_restart_is_exact(settings, broker, end_offsets, tmp_path):
    env = _env(settings, broker.bootstrap)
    ensure_topics(broker.bootstrap, settings)
    write_dataset(tmp_path / "data", n_items=400, n_users=80, n_events=12000, seed=21)
    _python(SEED_CATALOGUE, env, str(tmp_path / "data" / "items.jsonl"))

    from streams.dev.replay import replay

    replay(broker.bootstrap, tmp_path / "data" / "clicks.jsonl", None,
           settings.topic_clicks, settings.topic_items, rate=0)
    ends = end_offsets(settings.topic_clicks)
    total = sum(ends.values())
    assert total == 12000
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    group = f"{settings.app_id}-ingest"
    log_path = tmp_path / "worker.log"
    try:
        worker = _start_worker(env, log_path)
        # kill -9 once part, but not all, of the stream is committed
        _wait(lambda: sum(_committed(admin, group, settings.topic_clicks).values()) >= total * 0.15,
              120, "the first worker to make progress")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        assert worker.returncode == -signal.SIGKILL
        killed_at = sum(_committed(admin, group, settings.topic_clicks).values())
        assert killed_at < total, "the worker finished before it was killed"

        worker = _start_worker(env, log_path)
        _wait(lambda: _committed(admin, group, settings.topic_clicks) == ends, 150,
              lambda: f"the restarted worker to catch up: committed "
                      f"{_committed(admin, group, settings.topic_clicks)}, end {ends}")
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
        admin.close()

    dump = json.loads(_python(DUMP_COUNTS, env))
    got = {(a, b, d): n for a, b, d, n in dump["counts"]}
    clicks = [json.loads(line) for line in open(tmp_path / "data" / "clicks.jsonl")]
    items = [json.loads(line) for line in open(tmp_path / "data" / "items.jsonl")]
    expected = reference_counts([(c["user_id"], c["item_id"], c["ts"]) for c in clicks],
                                {i["item_id"]: i["category"] for i in items})
    assert got == dict(expected), log_path.read_text()[-3000:]
    # the user-item graph and the statistics computed from it are exact after the kill too
    visits = reference_visits((c["user_id"], c["item_id"], c["ts"]) for c in clicks)
    assert {(u, i, d): n for u, i, d, n in dump["visits"]} == dict(visits)
    want = reference_stats(visits, expected, StatsParams())
    assert_stats_equal({(r["item_a"], r["item_b"]): r for r in dump["stats"]}, want)


@pytest.mark.timeout(180)
def test_sigterm_with_the_broker_gone_exits_within_the_shutdown_timeout(settings, tmp_path):
    """Stopping leaves the consumer group, which waits forever on a broker that is gone; the
    worker gives up after PAIRSTREAM_SHUTDOWN_TIMEOUT_S with status 1 and says why, instead of
    hanging until someone sends SIGKILL."""
    import urllib.request

    from streams.core.embedded_broker import EmbeddedBroker, free_port

    port = free_port()
    with EmbeddedBroker() as broker:
        env = _env(settings, broker.bootstrap)
        env.update({"PAIRSTREAM_WEB_PORT": str(port), "PAIRSTREAM_SHUTDOWN_TIMEOUT_S": "4"})
        ensure_topics(broker.bootstrap, settings)
        log = tmp_path / "worker.log"
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                  stdout=open(log, "wb"), stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
            except OSError:
                return False

        try:
            _wait(ready, 90, lambda: "worker ready: " + log.read_text()[-2000:])
        except AssertionError:
            worker.kill()
            raise
    time.sleep(2)  # the broker is gone
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail("the worker did not exit 30 s after SIGTERM")
    assert worker.returncode == 1 and time.monotonic() - started < 20
    assert "still stopping 4s after SIGTERM" in log.read_text()
