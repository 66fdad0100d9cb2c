"""A real worker process (``pairstream worker``) killed with SIGKILL mid-stream, then restarted.

The in-process crash tests in ``test_consumer`` stop the ingest after chosen writes; this one
kills the whole OS process wherever it happens to be, with chDB's files and Kafka's group
state left as a real crash leaves them, and checks ``pair_counts`` against the reference.
"""

from __future__ import annotations

import json
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
from tests.processes import run_python, wait_until, worker_env
from tests.tables import assert_stats_equal

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


def _committed(admin, group, topic):
    offsets = admin.list_group_offsets(group).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0}


def _start_worker(env, log_path):
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--no-web"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.timeout(240)
def test_sigkill_mid_stream_then_restart_is_exact(settings, broker, end_offsets, tmp_path):
    env = worker_env(settings, broker.bootstrap)
    ensure_topics(broker.bootstrap, settings)
    write_dataset(tmp_path / "data", n_items=400, n_users=80, n_events=12000, seed=21)
    run_python(SEED_CATALOGUE, env, str(tmp_path / "data" / "items.jsonl"))

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
        wait_until(lambda: sum(_committed(admin, group, settings.topic_clicks).values()) >= total * 0.15,
              120, "the first worker to make progress")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        assert worker.returncode == -signal.SIGKILL
        killed_at = sum(_committed(admin, group, settings.topic_clicks).values())
        assert killed_at < total, "the worker finished before it was killed"

        worker = _start_worker(env, log_path)
        wait_until(lambda: _committed(admin, group, settings.topic_clicks) == ends, 150,
              lambda: f"the restarted worker to catch up: committed "
                      f"{_committed(admin, group, settings.topic_clicks)}, end {ends}")
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
        admin.close()

    dump = json.loads(run_python(DUMP_COUNTS, env))
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
        env = worker_env(settings, broker.bootstrap)
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
            wait_until(ready, 90, lambda: "worker ready: " + log.read_text()[-2000:])
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
