"""grafana/: the committed JSON is what generate.py builds, and every query is sound PromQL
over metrics that proxy/metrics.py really exports. (tests/test_prometheus_dashboards.py runs the
queries against a real Prometheus scraping a real shadowtap.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from shadowtap.metrics import Metrics
from shadowtap.pricing import Prices

from tests.dashboards import BOARDS, GRAFANA, generate, interpolate, load_generator, panel_queries


def test_committed_json_is_what_the_generator_builds() -> None:
    committed = sorted(path.name for path in generate.DASHBOARDS_DIR.glob("*.json"))
    assert committed == sorted(BOARDS), "run `make dashboards` and commit grafana/dashboards/"
    for name, board in BOARDS.items():
        on_disk = (generate.DASHBOARDS_DIR / name).read_text(encoding="utf-8")
        assert on_disk == generate.render(board), f"{name} is stale: run `make dashboards`"


def test_overview_covers_what_teams_watch() -> None:
    board = BOARDS["overview.json"]
    exprs = "\n".join(expr for _, _, expr in panel_queries(board))
    for metric in (
        "shadowtap_requests_total",
        "shadowtap_request_duration_seconds_bucket",
        "shadowtap_time_to_first_token_seconds_bucket",
        "shadowtap_agreement_score_sum",
        "shadowtap_disagreements_total",
        "shadowtap_shadow_requests_total",
        "shadowtap_shadow_inflight",
        "shadowtap_records_written_total",
        "shadowtap_records_dropped_total",
        "shadowtap_record_write_errors_total",
        "shadowtap_record_queue_depth",
        "shadowtap_tokens_total",
        "shadowtap_cost_usd_total",
    ):
        assert metric in exprs, f"no panel shows {metric}"
    by_panel: dict[str, str] = {}
    for title, _, expr in panel_queries(board):
        by_panel[title] = by_panel.get(title, "") + expr
    for title, metric in (
        ("Latency p50 / p95 / p99 by target", "shadowtap_request_duration_seconds_bucket"),
        ("Time to first token p50 / p95 / p99 by target", "shadowtap_time_to_first_token_seconds"),
    ):
        for quantile in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({quantile}, " in by_panel[title]
        assert metric in by_panel[title]
    assert 'target="secondary"' in exprs  # the noise floor beside the candidates


def test_candidate_variable_lists_candidate_targets() -> None:
    for board in BOARDS.values():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        candidate = variables["candidate"]
        assert candidate["type"] == "query"
        assert re.fullmatch(r"label_values\(.*, target\)", candidate["query"])
        assert candidate["multi"] and candidate["includeAll"]
        assert variables["datasource"]["current"]["value"] == generate.DATASOURCE_UID


def test_panels_have_unique_ids_and_the_datasource_variable() -> None:
    for name, board in BOARDS.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            refs = [target["refId"] for target in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]


def exported_sample_names() -> set[str]:
    """Every sample name a fully exercised Metrics registry exposes."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, prices={"small": Prices(1.0, 2.0)})
    metrics.prime({"primary": "primary", "small": "candidate"}, ["/v1/chat/completions"])
    metrics.observe_response("/v1/chat/completions", "small", "candidate", 200, 0.1, 0.01)
    metrics.observe_usage("small", 1, 1)
    metrics.observe_sampling("/v1/chat/completions", "sampled")
    metrics.observe_score("small", "exact", 0.0, 1.0)
    metrics.scorer_error("exact")
    metrics.scorer_skipped("exact")
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_every_queried_metric_is_exported() -> None:
    exported = exported_sample_names()
    for name, board in BOARDS.items():
        for title, _, expr in panel_queries(board):
            for metric in re.findall(r"\bshadowtap_[a-z0-9_]+", expr):
                assert metric in exported, f"{name} · {title}: {metric} is not exported"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses each expression (as a recording rule); no server needed.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (apt-get install prometheus; .ci/run does it)")
    exprs = [expr for board in BOARDS.values() for _, _, expr in panel_queries(board)]
    # One candidate selected, and several (a regex alternation, metacharacters escaped).
    selections = (["small"], ["a", "b.c"])
    rules = [
        {"record": f"dashboard:query_{i}", "expr": interpolate(expr, selection)}
        for i, (expr, selection) in enumerate(
            (expr, selection) for expr in exprs for selection in selections
        )
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_interpolate_matches_grafana_multi_value_format() -> None:
    expr = 'x{target=~"primary|$candidate"}[$__rate_interval] + y[$__range]'
    assert interpolate(expr, ["fast"], "5s") == 'x{target=~"primary|fast"}[5s] + y[1h]'
    assert interpolate(expr, ["fast", "v1.2"]).startswith(
        'x{target=~"primary|(fast|v1\\\\.2)"}[1m]'
    )


def test_provisioning_points_at_the_dashboards_and_the_fixed_datasource_uid() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["uid"] == generate.DATASOURCE_UID
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "shadowtap.yaml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def test_rendering_is_deterministic() -> None:
    again = load_generator().dashboards()
    assert json.dumps(again, sort_keys=True) == json.dumps(BOARDS, sort_keys=True)
