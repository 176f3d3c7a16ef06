"""The metrics the request path bumps, counted in plain dicts and exported at scrape time.

prometheus_client's `labels()`, `inc()` and `observe()` validate and take a lock on every call
(~1 us each, and a sampled exchange made nine of them). Everything here is bumped on the event
loop's thread only - the handler, the shadows and the exchange tasks, and the admin server's
scrape, all run there - so it needs no lock: an observation costs a dict lookup and an add.
The families exported are the ones `prometheus_client` would write for the same `Counter`,
`Gauge` or `Histogram` (names, help, types, labels, values), minus the `_created` samples that
`shadowtap serve` turns off anyway. `shadowtap.metrics.Metrics` is the only user.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# LLM answers take from ~10 ms (cached, tiny) to minutes (long generations).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_LE = [*(str(float(bound)) for bound in LATENCY_BUCKETS), "+Inf"]  # as prometheus_client writes


class Responses:
    """Answers of one (route, target, role): counts by status class and two latency histograms
    (per-bucket counts, cumulated only at scrape time)."""

    __slots__ = ("duration", "duration_sum", "statuses", "ttft", "ttft_sum")

    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self.duration = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.duration_sum = 0.0
        self.ttft = [0] * (len(LATENCY_BUCKETS) + 1)
        self.ttft_sum = 0.0


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    cumulative, total = [], 0
    for bound, count in zip(_LE, counts, strict=True):
        total += count
        cumulative.append((bound, float(total)))
    return cumulative


class PerRequestCollector(Collector):
    """What every proxied request and every shadow touches: requests, their durations and
    times to first token, and the sampling decisions."""

    def __init__(self) -> None:
        self.responses: dict[tuple[str, str, str], Responses] = {}
        self.sampling: dict[tuple[str, str], int] = {}

    def collect(self) -> Iterator[Metric]:
        responses = list(self.responses.items())
        requests = CounterMetricFamily(
            "shadowtap_requests",
            "Requests answered, by route and target: every proxied request and every shadow.",
            labels=["route", "target", "role", "status_class"],
        )
        duration = HistogramMetricFamily(
            "shadowtap_request_duration_seconds",
            "Time from sending a request upstream to the end of its answer.",
            labels=["route", "target", "role"],
        )
        ttft = HistogramMetricFamily(
            "shadowtap_time_to_first_token_seconds",
            "Time from sending a streamed request upstream to its first content token.",
            labels=["route", "target", "role"],
        )
        for key, series in responses:
            for klass, count in list(series.statuses.items()):
                requests.add_metric([*key, klass], count)
            if any(series.statuses.values()):  # answered at least once (not only primed)
                duration.add_metric(list(key), _buckets(series.duration), series.duration_sum)
                ttft.add_metric(list(key), _buckets(series.ttft), series.ttft_sum)
        sampling = CounterMetricFamily(
            "shadowtap_sampling_decisions",
            "Sampling decisions on eligible routes (sampled, not_sampled, shed, memory, "
            "too_large, invalid_json: of the requests drawn; the rest are not_sampled).",
            labels=["route", "outcome"],
        )
        for (route, outcome), count in list(self.sampling.items()):
            sampling.add_metric([route, outcome], count)
        yield from (requests, duration, ttft, sampling)

    def series(self, route: str, target: str, role: str) -> Responses:
        key = (route, target, role)
        found = self.responses.get(key)
        if found is None:
            found = self.responses[key] = Responses()
        return found


class PerExchangeCollector(Collector):
    """What each sampled exchange touches: its shadows (in flight, by outcome), the bytes read
    from its answers and the bounds that cut them, the tokens and cost of its answers.

    Each dict maps a label tuple (in the family's label order) to its value; a key present
    with 0 is a series primed to show zero."""

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, ...], float] = {}  # (target, kind)
        self.cost: dict[tuple[str, ...], float] = {}  # (target,)
        self.shadow_requests: dict[tuple[str, ...], float] = {}  # (target, outcome)
        self.inflight: dict[tuple[str, ...], float] = {}  # (target,)
        self.answer_bytes: dict[tuple[str, ...], float] = {}  # (target,)
        self.answers_cut: dict[tuple[str, ...], float] = {}  # (target, kind)

    def collect(self) -> Iterator[Metric]:
        Family = type[CounterMetricFamily] | type[GaugeMetricFamily]
        families: list[tuple[Family, str, str, list[str], dict[tuple[str, ...], float]]] = [
            (
                CounterMetricFamily,
                "shadowtap_tokens",
                "Tokens reported in usage by sampled answers, by kind (prompt, completion).",
                ["target", "kind"],
                dict(self.tokens),
            ),
            (
                CounterMetricFamily,
                "shadowtap_cost_usd",
                "Estimated spend of sampled answers from configured per-1k-token prices.",
                ["target"],
                dict(self.cost),
            ),
            (
                CounterMetricFamily,
                "shadowtap_shadow_requests",
                "Shadow requests by outcome: ok, error, timeout, skipped (no faithful translation"
                " for the target, never sent), shed (over budget, never sent).",
                ["target", "outcome"],
                dict(self.shadow_requests),
            ),
            (
                GaugeMetricFamily,
                "shadowtap_shadow_inflight",
                "Shadow requests currently in flight.",
                ["target"],
                dict(self.inflight),
            ),
            (
                CounterMetricFamily,
                "shadowtap_answer_bytes",
                "Decoded bytes read from answers for shadowing: each shadow's, and the primary's "
                "side copy (target primary).",
                ["target"],
                dict(self.answer_bytes),
            ),
            (
                CounterMetricFamily,
                "shadowtap_answers_cut",
                "Answers not read whole because a bound was reached: size (sampling."
                "max_answer_bytes) or memory (sampling.max_held_bytes).",
                ["target", "kind"],
                dict(self.answers_cut),
            ),
        ]
        for kind, name, documentation, labels, values in families:
            family = kind(name, documentation, labels=labels)
            for key, value in values.items():
                family.add_metric(list(key), value)
            yield family


def bump(counts: dict[tuple[str, ...], float], key: tuple[str, ...], amount: float = 1) -> None:
    counts[key] = counts.get(key, 0) + amount
