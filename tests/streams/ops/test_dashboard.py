"""The on-call view, checked the way on-call uses it: a real Prometheus (Debian's package)
scrapes a real worker, and every query of every Grafana panel must return series; the alert
rules load into that same Prometheus without errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest

from streams.core.embedded_broker import free_port
from streams.core.topics import ensure_topics
from streams.dev.synthetic import write_dataset
from tests.paths import REPO_ROOT as ROOT
from tests.processes import run_python, wait_until, worker_env
from tests.web import http

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pairstream.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"

SEED_AND_PUBLISH = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.student_fixtures import seed_pairs, tiny_students
from models.runtime import Students
from streams.ingest.catalogue import Catalogue
from streams.core.config import Settings
from streams.core.events import parse_item
from streams.publishing.publisher import publish
from streams.core.storage import open_storage
settings = Settings.load(None)
storage = open_storage(settings)
seed_pairs(storage)  # pair counts to publish before the worker starts
Catalogue().upsert(storage, [parse_item(line) for line in open(sys.argv[1], "rb") if line.strip()])
students = tiny_students(storage, Path(settings.data_dir) / "models")
publish(storage, settings, Students(students["version"], students["artifacts"]), progress=False)
storage.close()
"""


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def test_the_dashboard_answers_what_on_call_asks():
    titles = " ".join(title.lower() for title, _ in panel_queries())
    for wanted in ("lag (messages)", "lag (seconds", "status", "freshness", "per stage",
                   "dead letters", "llm call", "circuit", "labels", "training", "version",
                   "lookup latency", "lookup requests", "clickhouse write"):
        assert wanted in titles, wanted


@pytest.mark.timeout(240)
def test_a_real_prometheus_scraping_a_real_worker_fills_every_panel(settings, broker, tmp_path,
                                                                    read_dead_letters):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (make test-tools installs Debian's prometheus package)")
    web_port, prom_port = free_port(), free_port()
    env = worker_env(settings, broker.bootstrap)
    env.update({"PAIRSTREAM_WEB_PORT": str(web_port), "PAIRSTREAM_LAG_SAMPLE_S": "1",
                "PAIRSTREAM_TOPIC_ITEMS_DLQ": settings.topic_items_dlq,
                "PAIRSTREAM_TOPIC_MODEL_UPDATES": settings.topic_model_updates,
                "PAIRSTREAM_TOPIC_MODEL_UPDATES_DLQ": settings.topic_model_updates_dlq,
                "PAIRSTREAM_TRAINING_MIN_NEW_LABELS": "1000000000", "PAIRSTREAM_TRAINING_INTERVAL_S": "0",
                "PAIRSTREAM_TIER_LOW": "2"})
    ensure_topics(broker.bootstrap, settings)
    write_dataset(tmp_path / "data", n_items=200, n_users=60, n_events=4000, seed=5)
    run_python(SEED_AND_PUBLISH, env, str(tmp_path / "data" / "items.jsonl"), str(ROOT))

    from kafka import KafkaProducer

    from streams.dev.replay import replay

    replay(broker.bootstrap, tmp_path / "data" / "clicks.jsonl", None, settings.topic_clicks,
           settings.topic_items, rate=0)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send(settings.topic_clicks, key=b"u-bad", value=b"{not json")  # one dead letter
    producer.flush()
    producer.close()

    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        f"  - job_name: pairstream\n    static_configs: [{{targets: ['127.0.0.1:{web_port}']}}]\n")
    worker_log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                              stdout=worker_log, stderr=subprocess.STDOUT)
    prom = subprocess.Popen([prometheus, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    base = f"http://127.0.0.1:{web_port}"

    def query(expr: str) -> list:
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http(url)
        return json.loads(body)["data"]["result"] if status == 200 else []

    try:
        wait_until(lambda: http(base + "/readyz")[0] == 200, 90,
              lambda: "worker ready: " + (tmp_path / "worker.log").read_text()[-2000:])
        _hostile_control_messages(broker, settings, read_dead_letters)
        # the lookup API: a published pair and a partner list (lookup latency, pairs by source)
        status, body = http(base + "/v1/pair-scores", json.dumps({"pairs": [["nope-1", "nope-2"]]}).encode())
        assert status == 200, body
        wait_until(lambda: query('sum(pairstream_events_in_total{stage="ingest"}) >= 4000'), 90,
              "the worker to consume every click (seen by Prometheus)")
        wait_until(lambda: query("pairstream_labels_total"), 60, "labels written")
        for _ in range(3):  # a few requests inside the rate() windows
            http(base + "/v1/pair-scores", json.dumps({"pairs": [["nope-1", "nope-2"]]}).encode())
            http(base + "/v1/items/nope-1/partners?k=5")
            time.sleep(1)
        empty = []
        deadline = time.monotonic() + 30
        for title, expr in panel_queries():
            while not query(expr) and time.monotonic() < deadline:
                time.sleep(0.5)
            if not query(expr):
                empty.append(f"{title}: {expr}")
        assert not empty, "panels with no series:\n" + "\n".join(empty)

        status, body = http(f"http://127.0.0.1:{prom_port}/api/v1/rules")
        groups = json.loads(body)["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert rules and all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
        # the worker's own view agrees: a clicks lag row, caught up
        lag = query('pairstream_consumer_lag_status{topic="%s"}' % settings.topic_clicks)
        assert lag and all(float(s["value"][1]) == 0 for s in lag)  # OK
        live = query("pairstream_live_score_version_info")[0]["metric"]["score_version"]
        _status_page_in_a_real_browser(base + "/status", settings, live)
    finally:
        prom.terminate()
        worker.terminate()
        for proc in (prom, worker):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _status_page_in_a_real_browser(url: str, settings, score_version: str) -> None:
    """Headless Chromium renders ``/status`` and the figures are on the page: the clicks
    partition with its lag status, table ages, the live score version, the dead letter's
    reason, the events the ingest counted and a newly frequent pair."""
    from html.parser import HTMLParser

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test-tools installs Debian's chromium)")
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]

    class Sections(HTMLParser):
        """Text of each element with an id, and the rows of its tables."""

        def __init__(self):
            super().__init__()
            self.stack, self.text, self.rows = [], {}, {}

        def handle_starttag(self, tag, attrs):
            ident = dict(attrs).get("id")
            self.stack.append(ident or (self.stack[-1] if self.stack else None))
            if tag == "tr" and self.stack[-1]:
                self.rows.setdefault(self.stack[-1], []).append([])

        def handle_endtag(self, tag):
            if self.stack:
                self.stack.pop()

        def handle_data(self, data):
            where = self.stack[-1] if self.stack else None
            if where and data.strip():
                self.text[where] = self.text.get(where, "") + " " + data.strip()
                if self.rows.get(where) and self.lasttag == "td":
                    self.rows[where][-1].append(data.strip())

    page = Sections()
    page.feed(done.stdout)
    lag_rows = [r for r in page.rows.get("lag", []) if r and r[1] == settings.topic_clicks]
    assert lag_rows and all(r[-1] == "OK" and r[3] == "0" for r in lag_rows), page.rows.get("lag")
    fresh = {r[0]: r for r in page.rows.get("freshness", []) if r}
    assert "pair_counts" in fresh and "pair_scores" in fresh
    assert score_version in page.text["serving"]
    assert "the published scores reflect clicks up to" in page.text["serving"] and page.text.get("staleness")
    assert any(r[:2] == [settings.topic_clicks, "bad_json"] and r[2] == "1"
               for r in page.rows.get("dead-letters", []) if r)
    events = {r[0]: float(r[1]) for r in page.rows.get("events", []) if r}
    assert events["ingest"] >= 4000
    pairs = [r for r in page.rows.get("newly-frequent", []) if r]
    assert pairs and all(r[2] in ("low", "medium", "high") for r in pairs)


def _hostile_control_messages(broker, settings, read_dead_letters) -> None:
    """Bad messages on ``items`` and ``model-updates`` of a running worker land on their DLQs
    with the common headers, and the worker goes on (the caller checks it still serves)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for key, value in ((b"x", b"{not json"), (b"\xff", None), (b"y", b'{"item_id": "y"}')):
        producer.send(settings.topic_items, key=key, value=value, partition=0)
    for value in (None, b"[1]", b'{"score_version": "../../etc/passwd"}', b'{"score_version": "no-such-version"}'):
        producer.send(settings.topic_model_updates, key=b"update", value=value)
    producer.flush()
    producer.close()
    items = read_dead_letters(settings.topic_items_dlq, 3)
    assert [h["reason"] for _, h in items] == ["bad_json", "bad_tombstone", "missing_field"]
    assert {(h["source_topic"], h["source_partition"]) for _, h in items} == {(settings.topic_items, "0")}
    updates = read_dead_letters(settings.topic_model_updates_dlq, 4)
    assert [h["reason"] for _, h in updates] == ["tombstone", "not_object", "bad_version", "unknown_version"]
    assert all(h["source_topic"] == settings.topic_model_updates and h["detail"] for _, h in updates)
