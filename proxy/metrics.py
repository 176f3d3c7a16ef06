"""Every Prometheus metric shadowtap exports, defined in one place.

The registry is injected (tests build a fresh one each); call sites use the small `observe_*`
methods below rather than touching metric objects, so a disabled `Metrics` costs one attribute
check. Labels are bounded: target, role, route, scorer, outcome, status_class, kind — never
request ids, prompts or model output.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy import __version__
from proxy.pricing import Prices

# LLM answers take from ~10 ms (cached, tiny) to minutes (long generations).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

SHADOW_OUTCOMES = ("ok", "error", "timeout", "shed")


def status_class(status: int | None) -> str:
    """'2xx'…'5xx', or 'error' when no HTTP response arrived at all."""
    if status is None:
        return "error"
    return f"{status // 100}xx"


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        enabled: bool = True,
        prices: dict[str, Prices] | None = None,
    ) -> None:
        self.enabled = enabled
        self.registry = registry if registry is not None else CollectorRegistry()
        self.prices = prices or {}  # target -> its configured prices
        self._response_children: dict[tuple[str, str, str], tuple[Any, Any, dict[str, Any]]] = {}
        self._sampling_children: dict[tuple[str, str], Any] = {}
        r = self.registry
        self.requests = Counter(
            "shadowtap_requests",
            "Requests answered, by route and target: every proxied request and every shadow.",
            ["route", "target", "role", "status_class"],
            registry=r,
        )
        self.request_duration = Histogram(
            "shadowtap_request_duration_seconds",
            "Time from sending a request upstream to the end of its answer.",
            ["route", "target", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "shadowtap_time_to_first_token_seconds",
            "Time from sending a streamed request upstream to its first content token.",
            ["route", "target", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "shadowtap_tokens",
            "Tokens reported in usage by sampled answers, by kind (prompt, completion).",
            ["target", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "shadowtap_cost_usd",
            "Estimated spend of sampled answers from configured per-1k-token prices.",
            ["target"],
            registry=r,
        )
        self.sampling = Counter(
            "shadowtap_sampling_decisions",
            "Sampling decisions on eligible routes (sampled, not_sampled, shed).",
            ["route", "outcome"],
            registry=r,
        )
        self.shadow_requests = Counter(
            "shadowtap_shadow_requests",
            "Shadow requests by outcome: ok, error, timeout, shed (over budget, never sent).",
            ["target", "outcome"],
            registry=r,
        )
        self.shadow_inflight = Gauge(
            "shadowtap_shadow_inflight",
            "Shadow requests currently in flight.",
            ["target"],
            registry=r,
        )
        self.agreement = Histogram(
            "shadowtap_agreement_score",
            "Scorer agreement between the primary and a target's answer (1 = agree).",
            ["target", "scorer"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.disagreements = Counter(
            "shadowtap_disagreements",
            "Scored pairs under the scorer's threshold.",
            ["target", "scorer"],
            registry=r,
        )
        self.scorer_errors = Counter(
            "shadowtap_scorer_errors",
            "Scorer calls that raised; the pair is still recorded.",
            ["scorer"],
            registry=r,
        )
        self.scorer_skips = Counter(
            "shadowtap_scorer_skipped",
            "Pairs a scorer skipped on purpose (over its own budget, e.g. a judge); no score.",
            ["scorer"],
            registry=r,
        )
        self.records_written = Counter(
            "shadowtap_records_written", "Exchanges written to storage.", registry=r
        )
        self.records_dropped = Counter(
            "shadowtap_records_dropped",
            "Exchanges dropped before storage because the record queue was full.",
            registry=r,
        )
        self.record_write_errors = Counter(
            "shadowtap_record_write_errors",
            "Storage writes that failed (an exchange lost, or a roll-up or retention pass); "
            "the writer goes on.",
            registry=r,
        )
        self.record_queue_depth = Gauge(
            "shadowtap_record_queue_depth", "Exchanges waiting for the storage writer.", registry=r
        )
        self.build_info = Gauge(
            "shadowtap_build_info",
            "Build information; always 1.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)

    # -- the proxy ----------------------------------------------------------------------------
    def observe_response(
        self,
        route: str,
        target: str,
        role: str,
        status: int | None,
        latency_s: float | None,
        ttft_s: float | None,
    ) -> None:
        if not self.enabled:
            return
        key = (route, target, role)
        children = self._response_children.get(key)
        if children is None:  # labels() costs microseconds; the hot path reuses children
            children = (self.request_duration.labels(*key), self.ttft.labels(*key), {})
            self._response_children[key] = children
        duration, ttft, counters = children
        klass = status_class(status)
        counter = counters.get(klass)
        if counter is None:
            counter = counters[klass] = self.requests.labels(route, target, role, klass)
        counter.inc()
        if latency_s is not None:
            duration.observe(latency_s)
        if ttft_s is not None:
            ttft.observe(ttft_s)

    def observe_usage(
        self, target: str, prompt_tokens: int | None, completion_tokens: int | None
    ) -> None:
        if not self.enabled:
            return
        if prompt_tokens:
            self.tokens.labels(target, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(target, "completion").inc(completion_tokens)
        prices = self.prices.get(target)
        cost = prices.cost_usd(prompt_tokens, completion_tokens) if prices else None
        if cost:
            self.cost.labels(target).inc(cost)

    def observe_sampling(self, route: str, outcome: str) -> None:
        if not self.enabled:
            return
        child = self._sampling_children.get((route, outcome))
        if child is None:
            child = self._sampling_children[route, outcome] = self.sampling.labels(route, outcome)
        child.inc()

    def shadow_started(self, target: str) -> None:
        if self.enabled:
            self.shadow_inflight.labels(target).inc()

    def shadow_finished(self, target: str, outcome: str) -> None:
        if self.enabled:
            self.shadow_inflight.labels(target).dec()
            self.shadow_requests.labels(target, outcome).inc()

    def shadow_shed(self, target: str) -> None:
        if self.enabled:
            self.shadow_requests.labels(target, "shed").inc()

    # -- scoring --------------------------------------------------------------------------------
    def observe_score(self, target: str, scorer: str, score: float, threshold: float) -> None:
        if not self.enabled:
            return
        self.agreement.labels(target, scorer).observe(score)
        if score < threshold:
            self.disagreements.labels(target, scorer).inc()

    def scorer_skipped(self, scorer: str) -> None:
        if self.enabled:
            self.scorer_skips.labels(scorer).inc()

    def scorer_error(self, scorer: str) -> None:
        if self.enabled:
            self.scorer_errors.labels(scorer).inc()

    # -- storage --------------------------------------------------------------------------------
    def records_written_inc(self, count: int) -> None:
        if self.enabled:
            self.records_written.inc(count)

    def record_dropped(self) -> None:
        # Counted even when metrics are off: a drop must never be silent (logs read it too).
        self.records_dropped.inc()

    def record_write_error(self) -> None:
        self.record_write_errors.inc()

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        self.record_queue_depth.set_function(depth)

    def prime(self, targets: dict[str, str], routes: list[str]) -> None:
        """Create every label set up front so dashboards and rate() see zeros, not gaps."""
        if not self.enabled:
            return
        for target, role in targets.items():
            if role != "primary":
                self.shadow_inflight.labels(target)
                for outcome in SHADOW_OUTCOMES:
                    self.shadow_requests.labels(target, outcome)
            for route in routes:
                self.requests.labels(route, target, role, "2xx")
                self.requests.labels(route, target, role, "5xx")
