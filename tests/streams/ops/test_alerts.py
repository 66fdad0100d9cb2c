"""Alert rules: valid for promtool, and every metric they use is one the code exports."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

import models.telemetry  # noqa: F401 - registers the LLM metrics
import streams.core.metrics  # noqa: F401 - registers the stream metrics
from tests.paths import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make test-tools installs Debian's prometheus package)")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_cover_the_runbook_and_use_exported_metrics():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    for wanted in ("LagGrowing", "ConsumerStalled", "DeadLetters", "LLMErrorRate", "ScoreTableStale",
                   "TrainingFailing"):
        assert any(wanted in n for n in names), wanted
    exported = set()
    for family in REGISTRY.collect():
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
    used = {m for r in rules for m in re.findall(r"pairstream_[a-z_]+", r["expr"])}
    missing = {m for m in used if m not in exported and m.removesuffix("_total") not in exported}
    assert not missing, f"alerts use metrics nobody exports: {missing}"


RULE_TESTS = RULES.parent / "alerts_test.yml"


def test_every_alert_has_a_unit_test_and_promtool_passes_them():
    """Each alert's firing condition is exercised by ``promtool test rules`` on constructed
    series (deploy/prometheus/alerts_test.yml), so a typo in an expression fails here."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {t["alertname"] for case in cases for t in case.get("alert_rule_test", [])
              if any(t.get("exp_alerts") or [])}
    assert {r["alert"] for r in rules} <= tested, {r["alert"] for r in rules} - tested
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make test-tools installs Debian's prometheus package)")
    done = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True,
                          text=True, cwd=RULES.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
