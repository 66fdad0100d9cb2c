"""docker-compose.yaml cannot run here (no Docker engine): check it is complete and consistent."""

import json
import re

import yaml

from streams.core.config import ENV_PREFIX, Settings
from tests.paths import REPO_ROOT as ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
KNOWN_ENV = {env for env, _, _ in Settings.documentation()}


def test_services_present():
    services = COMPOSE["services"]
    assert {"kafka", "clickhouse", "worker", "trainer", "vllm", "prometheus", "grafana"} <= set(services)
    assert services["trainer"]["profiles"] == ["gpu"] and services["vllm"]["profiles"] == ["gpu"]
    gpu = services["trainer"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert "container_name" not in services["worker"]  # workers must be scalable


def test_references_resolve():
    services = COMPOSE["services"]
    volumes = set(COMPOSE.get("volumes", {}))
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
        if "build" in svc:
            assert (ROOT / svc["build"] / "Dockerfile").exists()


def test_env_names_are_settings():
    for name, svc in COMPOSE["services"].items():
        env = svc.get("environment", {})
        for key in env:
            if key.startswith(ENV_PREFIX):
                assert key in KNOWN_ENV, f"{name}: {key} is not a setting"


def test_no_secrets_in_compose():
    text = (ROOT / "docker-compose.yaml").read_text()
    for match in re.finditer(r"(PASSWORD|API_KEY):\s*(\S+)", text):
        assert match.group(2).startswith("${"), f"literal secret: {match.group(0)}"


def test_the_worker_port_is_guarded_by_default_and_prometheus_sends_the_token():
    """Compose binds the worker's web server to 0.0.0.0: the token must be required (no empty
    default) and the settings it yields must load, and the scrape must carry the token."""
    env = COMPOSE["x-pairstream-env"]
    assert env["PAIRSTREAM_WEB_HOST"] == "0.0.0.0"
    assert env["PAIRSTREAM_API_TOKEN"].startswith("${PAIRSTREAM_API_TOKEN:?")  # compose stops if unset
    Settings.load(env={"PAIRSTREAM_WEB_HOST": "0.0.0.0", "PAIRSTREAM_API_TOKEN": "from-.env"})
    secret = COMPOSE["secrets"]["pairstream_api_token"]
    assert secret == {"environment": "PAIRSTREAM_API_TOKEN"}
    assert "pairstream_api_token" in COMPOSE["services"]["prometheus"]["secrets"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["authorization"] == {"type": "Bearer",
                                       "credentials_file": "/run/secrets/pairstream_api_token"}


def test_grafana_dashboard_is_json_with_panels():
    board = json.loads((ROOT / "deploy/grafana/dashboards/pairstream.json").read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]  # rows only group panels
    # our series, or the Prometheus client's standard process ones (the worker's RSS)
    assert len(panels) >= 20 and all("pairstream_" in t["expr"] or "process_resident_memory_bytes" in t["expr"]
                                     for p in panels for t in p["targets"])


def test_the_image_installs_the_extras_the_compose_services_import():
    """The compose ``trainer`` runs a real teacher on a GPU with LoRA (``import peft``, the ``gpu``
    extra); an image built with a plain ``pip install .`` failed there on its first job."""
    import ast
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    install = [line for line in (ROOT / "Dockerfile").read_text().splitlines()
               if line.startswith("RUN pip install")]
    assert len(install) == 1, install
    extras = re.search(r"\.\[([\w,-]+)\]", install[0])
    assert extras, f"the image installs no extras: {install[0]}"
    requirements = list(project["dependencies"]) + [
        r for extra in extras.group(1).split(",") for r in project["optional-dependencies"][extra]]
    installed = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-") for r in requirements}
    teacher = ast.parse((ROOT / "training/teacher.py").read_text())
    lora_imports = {node.module.split(".")[0] for node in ast.walk(teacher)
                    if isinstance(node, ast.ImportFrom) and node.module == "peft"}
    assert lora_imports == {"peft"} and "peft" in installed
