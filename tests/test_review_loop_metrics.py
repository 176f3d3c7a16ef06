"""The request path's lock-free counters (loop_metrics, 2687124) write what prometheus_client's
own Counter, Histogram and Gauge would write for the same observations, hostile label values
(quotes, newlines, backslashes, non-ASCII) and bucket edges included."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from shadowtap.loop_metrics import LATENCY_BUCKETS
from shadowtap.metrics import Metrics

ROUTE, TARGET = 'r"\n\\{x="y"}', "tä😀"
FAMILIES = (
    "shadowtap_requests_total",
    "shadowtap_request_duration_seconds",
    "shadowtap_time_to_first_token_seconds",
    "shadowtap_tokens_total",
    "shadowtap_shadow_inflight",
)


@pytest.fixture
def no_created() -> Iterator[None]:
    prometheus_client.disable_created_metrics()  # as `shadowtap serve` runs
    try:
        yield
    finally:
        prometheus_client.enable_created_metrics()


def samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if line.startswith(FAMILIES))


def test_the_exposition_is_prometheus_clients_own(no_created: None) -> None:
    metrics = Metrics(CollectorRegistry())
    ref = CollectorRegistry()
    labels = ["route", "target", "role"]
    requests = Counter("shadowtap_requests", "-", [*labels, "status_class"], registry=ref)
    duration = Histogram(
        "shadowtap_request_duration_seconds", "-", labels, buckets=LATENCY_BUCKETS, registry=ref
    )
    ttft = Histogram(
        "shadowtap_time_to_first_token_seconds", "-", labels, buckets=LATENCY_BUCKETS, registry=ref
    )
    tokens = Counter("shadowtap_tokens", "-", ["target", "kind"], registry=ref)
    inflight = Gauge("shadowtap_shadow_inflight", "-", ["target"], registry=ref)
    for value in (0.0, 0.01, 0.0100001, 0.3, 300, 300.5, 1e9):
        metrics.observe_response(ROUTE, TARGET, "candidate", 200, value, value / 2)
        requests.labels(ROUTE, TARGET, "candidate", "2xx").inc()
        duration.labels(ROUTE, TARGET, "candidate").observe(value)
        ttft.labels(ROUTE, TARGET, "candidate").observe(value / 2)
    metrics.observe_response(ROUTE, TARGET, "candidate", None, None, None)  # never answered
    requests.labels(ROUTE, TARGET, "candidate", "error").inc()
    metrics.observe_usage(TARGET, 10**15, 3)
    tokens.labels(TARGET, "prompt").inc(10**15)
    tokens.labels(TARGET, "completion").inc(3)
    for _ in range(3):
        metrics.shadow_started(TARGET)
        inflight.labels(TARGET).inc()
    metrics.shadow_finished(TARGET, "ok")
    inflight.labels(TARGET).dec()
    ours, theirs = samples(metrics.registry), samples(ref)
    assert len(ours) > 40
    assert ours == theirs
