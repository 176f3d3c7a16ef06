"""deploy/prometheus/: the scrape config and the rules pass promtool, and the rules' unit tests
(deploy/prometheus/tests/*.yml) pass `promtool test rules`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from shadowtap.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = DEPLOY / "rules" / "shadowtap.rules.yml"
ALERTS = {
    "ShadowtapDown",
    "ShadowtapCandidateErrorRateHigh",
    "ShadowtapCandidateDisagreementAboveNoise",
    "ShadowtapRecordsDropped",
    "ShadowtapRecordWriteErrors",
    "ShadowtapShadowsShed",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed (apt-get install prometheus; .ci/run does it)")
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=DEPLOY
    )


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted((DEPLOY / "tests").glob("*.yml"))
    assert tests
    result = promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for path in (DEPLOY / "tests").glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == ALERTS


def test_alerts_are_the_documented_set_with_severity_and_summary() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert {rule["alert"] for rule in alerts} == ALERTS
    for rule in alerts:
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]


def test_rules_only_read_exported_metrics() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.prime({"primary": "primary", "small": "candidate"}, ["/v1/chat/completions"])
    metrics.observe_score("small", "exact", 0.0, 1.0)
    exported = {sample.name for family in registry.collect() for sample in family.samples}
    for metric in re.findall(r"\bshadowtap_[a-z0-9_]+", RULES.read_text()):
        assert metric in exported, metric


def test_example_config_is_valid_and_scrapes_the_compose_service() -> None:
    result = promtool("check", "config", DEPLOY / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "shadowtap"  # ShadowtapDown selects up{job="shadowtap"}
    assert job["static_configs"][0]["targets"] == ["shadowtap:9464"]
