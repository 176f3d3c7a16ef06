"""proxy/metrics.py: what each observe_* call exports, on a fresh registry per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from shadowtap.metrics import Metrics, status_class
from shadowtap.pricing import Prices

from tests.promtool import promtool_check_metrics

ROUTE = "/v1/chat/completions"
TARGETS = {"primary": "primary", "secondary": "secondary", "small": "candidate"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def exercise(metrics: Metrics) -> None:
    """Every observe_* call once, as one sampled streamed exchange would make them."""
    metrics.prime(TARGETS, [ROUTE])
    metrics.observe_sampling(ROUTE, "sampled")
    metrics.shadow_started("small")
    metrics.observe_response(ROUTE, "primary", "primary", 200, 0.8, 0.12)
    metrics.observe_response(ROUTE, "small", "candidate", 200, 0.3, 0.05)
    metrics.shadow_finished("small", "ok")
    metrics.shadow_shed("secondary")
    metrics.observe_usage("small", 100, 50)
    metrics.observe_score("small", "similarity", 0.4, 0.8)
    metrics.scorer_error("similarity")
    metrics.records_written_inc(3)
    metrics.record_dropped()
    metrics.record_write_error()
    metrics.track_queue_depth(lambda: 7)


def test_exposition_passes_promtool_lint(registry: CollectorRegistry) -> None:
    exercise(Metrics(registry))
    result = promtool_check_metrics(generate_latest(registry))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_promtool_lint_catches_a_non_base_unit(registry: CollectorRegistry) -> None:
    # The lint above must be able to fail: a unit that is not a base unit is reported.
    from prometheus_client import Histogram

    Histogram("shadowtap_latency_milliseconds", "wrong unit", registry=registry).observe(3)
    result = promtool_check_metrics(generate_latest(registry))
    assert "milliseconds" in result.stdout + result.stderr


def test_each_observation_lands_on_its_labels(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, prices={"small": Prices(per_1k_prompt=2.0, per_1k_completion=4.0)})
    exercise(metrics)
    labels = {"route": ROUTE, "target": "small", "role": "candidate"}
    assert value(registry, "shadowtap_requests_total", **labels, status_class="2xx") == 1
    assert value(registry, "shadowtap_request_duration_seconds_count", **labels) == 1
    assert value(registry, "shadowtap_request_duration_seconds_sum", **labels) == 0.3
    assert value(registry, "shadowtap_time_to_first_token_seconds_bucket", **labels, le="0.05") == 1
    assert (
        value(registry, "shadowtap_time_to_first_token_seconds_bucket", **labels, le="0.025") == 0
    )
    assert value(registry, "shadowtap_tokens_total", target="small", kind="prompt") == 100
    assert value(registry, "shadowtap_tokens_total", target="small", kind="completion") == 50
    assert value(registry, "shadowtap_cost_usd_total", target="small") == pytest.approx(0.4)
    assert value(registry, "shadowtap_shadow_requests_total", target="small", outcome="ok") == 1
    assert (
        value(registry, "shadowtap_shadow_requests_total", target="secondary", outcome="shed") == 1
    )
    assert value(registry, "shadowtap_shadow_inflight", target="small") == 0
    assert (
        value(registry, "shadowtap_sampling_decisions_total", route=ROUTE, outcome="sampled") == 1
    )
    assert (
        value(registry, "shadowtap_agreement_score_count", target="small", scorer="similarity") == 1
    )
    assert (
        value(registry, "shadowtap_disagreements_total", target="small", scorer="similarity") == 1
    )
    assert value(registry, "shadowtap_scorer_errors_total", scorer="similarity") == 1
    assert value(registry, "shadowtap_records_written_total") == 3
    assert value(registry, "shadowtap_records_dropped_total") == 1
    assert value(registry, "shadowtap_record_write_errors_total") == 1
    assert value(registry, "shadowtap_record_queue_depth") == 7


def test_fresh_registries_do_not_share_counts() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first).records_written_inc(5)
    Metrics(second)
    assert value(first, "shadowtap_records_written_total") == 5
    assert value(second, "shadowtap_records_written_total") == 0


def test_inflight_rises_while_a_shadow_runs(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.shadow_started("small")
    metrics.shadow_started("small")
    assert value(registry, "shadowtap_shadow_inflight", target="small") == 2
    metrics.shadow_finished("small", "timeout")
    assert value(registry, "shadowtap_shadow_inflight", target="small") == 1
    assert (
        value(registry, "shadowtap_shadow_requests_total", target="small", outcome="timeout") == 1
    )


def test_score_at_the_threshold_is_agreement(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.observe_score("small", "exact", 0.8, 0.8)
    metrics.observe_score("small", "exact", 0.79, 0.8)
    assert value(registry, "shadowtap_agreement_score_count", target="small", scorer="exact") == 2
    assert value(registry, "shadowtap_disagreements_total", target="small", scorer="exact") == 1


def test_no_price_means_no_cost_series(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, prices={"small": Prices()})
    metrics.observe_usage("small", 100, 50)
    metrics.observe_usage("other", 100, 50)
    assert value(registry, "shadowtap_tokens_total", target="small", kind="prompt") == 100
    assert value(registry, "shadowtap_cost_usd_total", target="small") is None
    assert value(registry, "shadowtap_cost_usd_total", target="other") is None


def test_prime_exposes_zeros_for_every_target_and_route(registry: CollectorRegistry) -> None:
    Metrics(registry).prime(TARGETS, [ROUTE])
    for target, role in TARGETS.items():
        for klass in ("2xx", "5xx"):
            labels = {"route": ROUTE, "target": target, "role": role, "status_class": klass}
            assert value(registry, "shadowtap_requests_total", **labels) == 0
    for outcome in ("ok", "error", "timeout", "shed"):
        assert (
            value(registry, "shadowtap_shadow_requests_total", target="small", outcome=outcome) == 0
        )
    # The primary is never a shadow.
    assert (
        value(registry, "shadowtap_shadow_requests_total", target="primary", outcome="ok") is None
    )


def test_disabled_metrics_record_nothing_but_drops(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, enabled=False)
    exercise(metrics)
    exposition = generate_latest(registry).decode()
    samples = [line for line in exposition.splitlines() if line and not line.startswith("#")]
    assert value(registry, "shadowtap_records_dropped_total") == 1  # never silent
    assert (
        value(
            registry,
            "shadowtap_requests_total",
            route=ROUTE,
            target="small",
            role="candidate",
            status_class="2xx",
        )
        is None
    )
    assert not any("shadowtap_tokens_total{" in line for line in samples)
    assert not any("shadowtap_agreement_score_count{" in line for line in samples)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "2xx"), (204, "2xx"), (302, "3xx"), (429, "4xx"), (503, "5xx"), (None, "error")],
)
def test_status_class(status: int | None, expected: str) -> None:
    assert status_class(status) == expected


def test_labels_never_carry_request_content(registry: CollectorRegistry) -> None:
    exercise(Metrics(registry))
    names = {
        label
        for family in registry.collect()
        for sample in family.samples
        for label in sample.labels
    }
    allowed = {"route", "target", "role", "status_class", "kind", "outcome", "scorer", "le"}
    assert names <= allowed | {"version", "python"}


def test_docs_list_every_metric(registry: CollectorRegistry) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text("utf-8")
    section = docs[docs.index("## Metrics") : docs.index("## Dashboards")]
    exercise(Metrics(registry))
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in section, f"docs/metrics.md does not list {name}"


def test_latency_buckets_are_cumulative_and_inclusive(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    for latency in (0.01, 0.011, 300.0, 301.0):
        metrics.observe_response(ROUTE, "primary", "primary", 200, latency, None)
    labels = {"route": ROUTE, "target": "primary", "role": "primary"}
    bucket = "shadowtap_request_duration_seconds_bucket"
    assert value(registry, bucket, **labels, le="0.01") == 1  # le is inclusive
    assert value(registry, bucket, **labels, le="0.025") == 2
    assert value(registry, bucket, **labels, le="300.0") == 3
    assert value(registry, bucket, **labels, le="+Inf") == 4
    assert value(registry, "shadowtap_request_duration_seconds_count", **labels) == 4
    assert value(registry, "shadowtap_request_duration_seconds_sum", **labels) == pytest.approx(
        601.021
    )
    # No TTFT was observed: the histogram is there (the series answered), all zeros.
    assert value(registry, "shadowtap_time_to_first_token_seconds_count", **labels) == 0


def family_lines(text: str, name: str) -> list[str]:
    """The exposition lines of metric family `name` (help, type, samples), `_created` aside."""
    lines = []
    for line in text.splitlines():
        metric = line.removeprefix("# HELP ").removeprefix("# TYPE ")
        sample = metric.split("{", 1)[0].split(" ", 1)[0]
        if sample in (name, f"{name}_total") and not sample.endswith("_created"):
            lines.append(line)
    return sorted(lines)


def test_exchange_counters_export_what_prometheus_client_would(registry: CollectorRegistry) -> None:
    """Counted without prometheus_client's locks, exported as its Counter and Gauge export them:
    the same names, help, types, labels and values (the `_created` samples aside, which
    `shadowtap serve` turns off), primed zeros included."""
    prices = {"small": Prices(per_1k_prompt=2.0, per_1k_completion=4.0)}
    metrics = Metrics(registry, prices=prices)
    metrics.prime(TARGETS, [ROUTE])
    metrics.shadow_started("small")
    metrics.shadow_started("small")
    metrics.shadow_finished("small", "ok")
    metrics.shadow_shed("secondary")
    metrics.observe_usage("small", 100, 50)
    metrics.observe_usage("primary", 7, None)
    metrics.observe_answer("small", 1234, "size")
    metrics.observe_answer("primary", 99, None)

    reference = CollectorRegistry()
    tokens = Counter(
        "shadowtap_tokens",
        "Tokens reported in usage by sampled answers, by kind (prompt, completion).",
        ["target", "kind"],
        registry=reference,
    )
    cost = Counter(
        "shadowtap_cost_usd",
        "Estimated spend of sampled answers from configured per-1k-token prices.",
        ["target"],
        registry=reference,
    )
    shadows = Counter(
        "shadowtap_shadow_requests",
        "Shadow requests by outcome: ok, error, timeout, skipped (no faithful translation"
        " for the target, never sent), shed (over budget, never sent).",
        ["target", "outcome"],
        registry=reference,
    )
    inflight = Gauge(
        "shadowtap_shadow_inflight",
        "Shadow requests currently in flight.",
        ["target"],
        registry=reference,
    )
    answer_bytes = Counter(
        "shadowtap_answer_bytes",
        "Decoded bytes read from answers for shadowing: each shadow's, and the primary's "
        "side copy (target primary).",
        ["target"],
        registry=reference,
    )
    cut = Counter(
        "shadowtap_answers_cut",
        "Answers not read whole because a bound was reached: size (sampling."
        "max_answer_bytes) or memory (sampling.max_held_bytes).",
        ["target", "kind"],
        registry=reference,
    )
    for target, role in TARGETS.items():  # what prime() made
        answer_bytes.labels(target)
        for kind in ("size", "memory"):
            cut.labels(target, kind)
        if role != "primary":
            inflight.labels(target)
            for outcome in ("ok", "error", "timeout", "shed"):
                shadows.labels(target, outcome)
    inflight.labels("small").inc(2)
    inflight.labels("small").dec()
    shadows.labels("small", "ok").inc()
    shadows.labels("secondary", "shed").inc()
    tokens.labels("small", "prompt").inc(100)
    tokens.labels("small", "completion").inc(50)
    cost.labels("small").inc(0.4)
    tokens.labels("primary", "prompt").inc(7)
    answer_bytes.labels("small").inc(1234)
    cut.labels("small", "size").inc()
    answer_bytes.labels("primary").inc(99)

    ours, theirs = generate_latest(registry).decode(), generate_latest(reference).decode()
    for name in (
        "shadowtap_tokens",
        "shadowtap_cost_usd",
        "shadowtap_shadow_requests",
        "shadowtap_shadow_inflight",
        "shadowtap_answer_bytes",
        "shadowtap_answers_cut",
    ):
        assert family_lines(ours, name) == family_lines(theirs, name), name
        assert len(family_lines(ours, name)) > 2, name  # help, type and samples were compared
