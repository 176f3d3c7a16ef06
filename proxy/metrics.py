"""Every Prometheus metric shadowtap exports, defined in one place.

The registry is injected (tests build a fresh one each); call sites use the small `observe_*`
methods below rather than touching metric objects, so a disabled `Metrics` costs one attribute
check. Labels are bounded: target, role, route, scorer, outcome, status_class, kind, listener,
phase — never request ids, prompts or model output.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from shadowtap import __version__
from shadowtap.loop_metrics import (
    LATENCY_BUCKETS,
    PerExchangeCollector,
    PerRequestCollector,
    bump,
)
from shadowtap.pricing import Prices

SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

SHADOW_OUTCOMES = ("ok", "error", "timeout", "shed")
ANSWER_CUTS = ("size", "memory")  # the bound that stopped reading an answer


_STATUS_CLASSES = tuple(f"{hundreds}xx" for hundreds in range(10))


def status_class(status: int | None) -> str:
    """'2xx'…'5xx', or 'error' when no HTTP response arrived at all."""
    if status is None:
        return "error"
    hundreds = status // 100
    # The label strings made once; a status outside 0-999 (none reaches here) still works.
    return _STATUS_CLASSES[hundreds] if 0 <= hundreds < 10 else f"{hundreds}xx"


class _Children:
    """`metric.labels(...)` memoized: labels() validates and takes a lock on every call."""

    __slots__ = ("_cache", "_metric")

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self._metric.labels(*labels)
        return child


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
        r = self.registry
        # Counted on the event loop's thread without prometheus_client's locks (loop_metrics):
        # shadowtap_requests_total, _request_duration_seconds, _time_to_first_token_seconds
        # and _sampling_decisions_total, touched by every request; _tokens_total,
        # _cost_usd_total, _shadow_requests_total, _shadow_inflight, _answer_bytes_total and
        # _answers_cut_total, touched by every sampled exchange.
        self._per_request = PerRequestCollector()
        r.register(self._per_request)
        self._per_exchange = PerExchangeCollector()
        r.register(self._per_exchange)
        self.held_bytes = Gauge(
            "shadowtap_held_bytes",
            "Bytes held for shadows, scoring and recording, against sampling.max_held_bytes.",
            registry=r,
        )
        self.throttled = Counter(
            "shadowtap_shadow_throttled_seconds",
            "Time answers waited for their target's read budget (sampling."
            "max_read_bytes_per_second, max_loop_share); a shadow's latency includes it.",
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
            "Exchanges dropped before storage: the record queue was full (storage slow or "
            "degraded) or the recorder was closing.",
            registry=r,
        )
        self.record_write_errors = Counter(
            "shadowtap_record_write_errors",
            "Storage writes that failed (one per exchange lost, or a roll-up or retention "
            "pass); the writer goes on.",
            registry=r,
        )
        self.record_text_truncated = Counter(
            "shadowtap_record_text_truncated",
            "Stored texts cut at storage.max_text_bytes and marked [TRUNCATED: ...], by field "
            "(request_body, text, tool_calls, error, detail).",
            ["field"],
            registry=r,
        )
        self.records_lost = Counter(
            "shadowtap_records_lost",
            "Exchanges written to a database file that was then deleted or replaced under the "
            "writer, and that could not be rolled to Parquet from it.",
            registry=r,
        )
        self.recording_degraded = Gauge(
            "shadowtap_recording_degraded",
            "1 while recording is degraded: storage cannot be opened or written and the writer "
            "is retrying (the proxy serves on; /readyz says why).",
            registry=r,
        )
        self.record_queue_depth = Gauge(
            "shadowtap_record_queue_depth", "Exchanges waiting for the storage writer.", registry=r
        )
        # Client connections, per listener (proxy, admin); counted even with metrics off,
        # since a refused or timed-out client must never go unseen.
        self.connections_open = Gauge(
            "shadowtap_connections_open",
            "Client connections open now, by listener (proxy, admin).",
            ["listener"],
            registry=r,
        )
        self.connections_rejected = Counter(
            "shadowtap_connections_rejected",
            "Client connections closed on arrival: the listener was at its connection cap "
            "(server.max_connections, server.admin_max_connections).",
            ["listener"],
            registry=r,
        )
        self.client_timeouts = Counter(
            "shadowtap_client_timeouts",
            "Client connections closed because a request head (phase=header) or a request "
            "body (phase=body, answered 408) did not arrive in time.",
            ["listener", "phase"],
            registry=r,
        )
        self.build_info = Gauge(
            "shadowtap_build_info",
            "Build information; always 1.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # Children of the scoring metrics, looked up once per label set.
        self._agreement = _Children(self.agreement)
        self._disagreements = _Children(self.disagreements)

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
        series = self._per_request.series(route, target, role)
        klass = status_class(status)
        series.statuses[klass] = series.statuses.get(klass, 0) + 1
        if latency_s is not None:
            series.duration[bisect_left(LATENCY_BUCKETS, latency_s)] += 1
            series.duration_sum += latency_s
        if ttft_s is not None:
            series.ttft[bisect_left(LATENCY_BUCKETS, ttft_s)] += 1
            series.ttft_sum += ttft_s

    def observe_ttft(self, route: str, target: str, role: str, ttft_s: float | None) -> None:
        """A time to first token known only after the answer was parsed (the primary's)."""
        if not self.enabled or ttft_s is None:
            return
        series = self._per_request.series(route, target, role)
        series.ttft[bisect_left(LATENCY_BUCKETS, ttft_s)] += 1
        series.ttft_sum += ttft_s

    def observe_usage(
        self, target: str, prompt_tokens: int | None, completion_tokens: int | None
    ) -> None:
        if not self.enabled:
            return
        counts = self._per_exchange
        if prompt_tokens:
            bump(counts.tokens, (target, "prompt"), prompt_tokens)
        if completion_tokens:
            bump(counts.tokens, (target, "completion"), completion_tokens)
        prices = self.prices.get(target)
        cost = prices.cost_usd(prompt_tokens, completion_tokens) if prices else None
        if cost:
            bump(counts.cost, (target,), cost)

    def observe_sampling(self, route: str, outcome: str) -> None:
        if not self.enabled:
            return
        counts = self._per_request.sampling
        counts[route, outcome] = counts.get((route, outcome), 0) + 1

    def shadow_started(self, target: str) -> None:
        if self.enabled:
            bump(self._per_exchange.inflight, (target,))

    def shadow_finished(self, target: str, outcome: str) -> None:
        if self.enabled:
            bump(self._per_exchange.inflight, (target,), -1)
            bump(self._per_exchange.shadow_requests, (target, outcome))

    def shadow_shed(self, target: str) -> None:
        if self.enabled:
            bump(self._per_exchange.shadow_requests, (target, "shed"))

    def observe_answer(self, target: str, size: int, cut: str | None) -> None:
        """One answer read for shadowing: its decoded bytes, and the bound that cut it."""
        if not self.enabled:
            return
        if size:
            bump(self._per_exchange.answer_bytes, (target,), size)
        if cut is not None:
            bump(self._per_exchange.answers_cut, (target, cut))

    def throttled_for(self, target: str) -> Callable[[float], None]:
        """The callback a target's `Pace` calls with each wait (seconds)."""
        counter = self.throttled.labels(target)
        return counter.inc if self.enabled else lambda _seconds: None

    def track_held_bytes(self, held: Callable[[], float]) -> None:
        self.held_bytes.set_function(held)

    # -- scoring --------------------------------------------------------------------------------
    def observe_score(self, target: str, scorer: str, score: float, threshold: float) -> None:
        if not self.enabled:
            return
        self._agreement(target, scorer).observe(score)
        if score < threshold:
            self._disagreements(target, scorer).inc()

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

    def record_write_error(self, count: int = 1) -> None:
        self.record_write_errors.inc(count)

    def record_text_truncated_inc(self, field: str, count: int) -> None:
        # Counted even when metrics are off, like the drops: a cut must never be silent.
        self.record_text_truncated.labels(field=field).inc(count)

    def records_lost_inc(self, count: int) -> None:
        self.records_lost.inc(count)

    def set_recording_degraded(self, degraded: bool) -> None:
        # Set even when metrics are off, like the loss counters: the state must be readable.
        self.recording_degraded.set(1 if degraded else 0)

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        self.record_queue_depth.set_function(depth)

    # -- listeners ------------------------------------------------------------------------------
    def track_connections(self, listener: str, count: Callable[[], float]) -> None:
        self.connections_open.labels(listener).set_function(count)
        self.connections_rejected.labels(listener)
        for phase in ("header", "body"):
            self.client_timeouts.labels(listener, phase)

    def connection_rejected(self, listener: str) -> None:
        self.connections_rejected.labels(listener).inc()

    def client_timed_out(self, listener: str, phase: str) -> None:
        self.client_timeouts.labels(listener, phase).inc()

    def prime(self, targets: dict[str, str], routes: list[str]) -> None:
        """Create every label set up front so dashboards and rate() see zeros, not gaps."""
        if not self.enabled:
            return
        counts = self._per_exchange
        for target, role in targets.items():
            counts.answer_bytes.setdefault((target,), 0)
            for kind in ANSWER_CUTS:
                counts.answers_cut.setdefault((target, kind), 0)
            self.throttled.labels(target)
            if role != "primary":
                counts.inflight.setdefault((target,), 0)
                for outcome in SHADOW_OUTCOMES:
                    counts.shadow_requests.setdefault((target, outcome), 0)
            for route in routes:
                statuses = self._per_request.series(route, target, role).statuses
                statuses.setdefault("2xx", 0)
                statuses.setdefault("5xx", 0)
