"""The bearer token guards everything the worker serves but the probes, and the deploy's
Prometheus scrape config carries it (checked with a real Prometheus)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse

import pytest
import yaml

from streams.core.embedded_broker import free_port
from streams.serving.http import build_app, serve
from tests.paths import REPO_ROOT
from tests.web import http

SCRAPE_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"


def _scrape_config_for(target: str, token_file) -> str:
    """The deploy's scrape job, pointed at one local target and a local token file."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config.pop("rule_files", None)
    config["global"] = {"scrape_interval": "1s"}
    job = config["scrape_configs"][0]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    assert job["authorization"]["credentials_file"] == "/run/secrets/pairstream_api_token"
    job["authorization"]["credentials_file"] = str(token_file)
    return yaml.safe_dump(config)


def test_a_real_prometheus_scrapes_a_guarded_worker_with_the_deploy_config(tmp_path):
    """With the token in its secret file the target is up; with a wrong token it is down
    (401), and the probes answer without any token."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (make test-tools installs Debian's prometheus package)")

    async def go():
        port = free_port()
        runner = await serve(build_app({}, api_token="scrape-me"), port, "127.0.0.1")
        results = {}
        try:
            for name, token in (("right", "scrape-me\n"), ("wrong", "guess")):
                token_file = tmp_path / f"{name}.token"
                token_file.write_text(token)  # Prometheus trims the trailing newline
                config = tmp_path / f"{name}.yml"
                config.write_text(_scrape_config_for(f"127.0.0.1:{port}", token_file))
                results[name] = await asyncio.to_thread(_up_as_seen_by_prometheus, prometheus, config,
                                                        tmp_path / name)
            results["probe"] = (await asyncio.to_thread(http, f"http://127.0.0.1:{port}/healthz"))[0]
            results["open"] = (await asyncio.to_thread(http, f"http://127.0.0.1:{port}/metrics"))[0]
        finally:
            await runner.cleanup()
        return results

    assert asyncio.run(go()) == {"right": 1.0, "wrong": 0.0, "probe": 200, "open": 401}


def _up_as_seen_by_prometheus(prometheus: str, config, data_dir) -> float | None:
    port = free_port()
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = http(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": "up"}))
            result = json.loads(body)["data"]["result"] if status == 200 else []
            if result:
                return float(result[0]["value"][1])
            time.sleep(0.5)
        return None
    finally:
        prom.terminate()
        prom.wait(10)
