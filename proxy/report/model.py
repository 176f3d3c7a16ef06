"""The `Report`: everything `shadowtap report` decided and measured, as plain data.

Built once by `shadowtap.report.build.build_report`; the terminal tables, the JSON and the HTML file
are three renderings of the same object, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from shadowtap.report.stats import Interval

Verdict = Literal["pass", "fail", "insufficient"]
# Why a gate is `insufficient`: it has no evidence (no score rows, only scorer errors, a scorer
# that applied to no pair, no noise floor to compare with, no cost recorded), too few pairs, or
# an interval that still contains the limit.
Reason = Literal[
    "no_rows",
    "scorer_errors",
    "not_applicable",
    "no_noise_floor",
    "no_data",
    "too_few_pairs",
    "undecided",
]


@dataclass(slots=True)
class GateResult:
    """One gate: `value` must stay at or under `limit` for the candidate to pass.

    Example: `GateResult("p95_latency_ratio", 1.5, Interval(1.9, 1.7, 2.1, 400, "bootstrap"),
    "fail")` — the whole interval is above 1.5, so the candidate is slower beyond doubt.
    """

    gate: str  # agreement_drop, p95_latency_ratio, error_rate, cost_ratio
    limit: float
    value: Interval
    verdict: Verdict
    scorer: str | None = None  # for agreement_drop: which scorer
    more_pairs: int | None = None  # insufficient: about how many more pairs would decide it
    note: str | None = None
    reason: Reason | None = None  # set exactly when the verdict is insufficient
    # The fixed-sample interval at `confidence`, for reference: valid only at a sample size
    # fixed in advance, so it never decides (`value`, the anytime interval, does).
    fixed: Interval | None = None
    slice: str | None = None  # slice_drop: the slice the value is from, e.g. "tools=yes"


@dataclass(slots=True)
class ScorerSummary:
    """Agreement on one scorer: the candidate beside the noise floor (the secondary)."""

    scorer: str
    candidate: Interval  # mean score (1 = agreement) with a bootstrap interval
    noise: Interval | None  # the same for primary vs secondary; None when no secondary data
    threshold: float | None
    under_threshold: Interval | None  # share of pairs scoring under the threshold (Wilson)
    noise_under_threshold: Interval | None
    histogram: list[int] = field(default_factory=list)  # counts in HISTOGRAM_BINS equal bins
    noise_histogram: list[int] = field(default_factory=list)


@dataclass(slots=True)
class LatencySummary:
    """Percentiles of one latency measure on the requests both sides answered successfully."""

    metric: str  # latency_ms or ttft_ms
    pairs: int
    primary: dict[str, float | None]  # p50, p95, p99 in milliseconds
    candidate: dict[str, float | None]
    ratio_p50: Interval  # candidate / primary on the same requests (paired bootstrap)
    ratio_p95: Interval


@dataclass(slots=True)
class Usage:
    """Tokens and cost per 1,000 requests (averages over the pairs that report them)."""

    prompt_tokens: float | None
    completion_tokens: float | None
    cost_usd: float | None


@dataclass(slots=True)
class Example:
    """One of the most disagreeing pairs, as stored (so redacted where storage redacts)."""

    request_id: str
    started_at: str | None
    route: str | None
    model: str | None
    request: str | None  # the last user message (or the whole body when it has no messages)
    primary_text: str | None
    candidate_text: str | None
    primary_tool_calls: str | None
    candidate_tool_calls: str | None
    candidate_error: str | None
    scores: dict[str, float | None]


@dataclass(slots=True)
class SliceRow:
    """One slice of traffic (e.g. `tools=yes`), measured like the whole candidate.

    Every interval is anytime-valid; its low end is corrected for every slice and scorer shown
    (so a slice whose low end is over a limit is worse with the report's wrong-fail guarantee),
    its high end is at the gates' wrong-pass level.
    """

    dimension: str  # route, model, stream, tools, structured, prompt_tokens, turns, slice_by
    value: str
    pairs: int
    drop: dict[str, Interval]  # per agreement scorer: the slice's noise floor - candidate mean
    error_rate: Interval  # candidate failures on requests the primary answered
    reliability: dict[str, Interval]  # per check (shadowtap.report.reliability.CHECKS)
    latency_ratio: Interval  # geometric mean of candidate / primary latency, same requests
    examples: list[Example] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.dimension}={self.value}"


@dataclass(slots=True)
class CandidateReport:
    name: str
    verdict: Verdict
    pairs: int
    gates: list[GateResult]
    more_pairs: int | None  # insufficient: the most any undecided gate needs
    scorers: list[ScorerSummary]
    latency: LatencySummary
    ttft: LatencySummary
    error_rate: Interval  # candidate failures on requests the primary answered (the gate)
    error_rate_all: Interval  # candidate failures on every pair, whatever the primary did
    primary_error_rate: Interval
    usage_primary: Usage
    usage_candidate: Usage
    # Functional reliability per check (shadowtap.report.reliability): the share of applicable
    # answers that are broken, for the candidate and for the primary on the same requests.
    reliability: dict[str, Interval]
    reliability_primary: dict[str, Interval]
    slices: list[SliceRow]  # where it breaks: worst first
    examples: list[Example]
    latency_histogram: list[int] = field(default_factory=list)  # on Report.latency_edges_ms
    # One-sided error level of each gate's high end (a wrong pass) and low end (a wrong fail),
    # after the correction for the report's candidates and this candidate's gates.
    levels: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    replayed_pairs: int = 0  # pairs answered by `shadowtap replay` (latency gate marked)


@dataclass(slots=True)
class NoiseFloor:
    """The secondary: the primary's model asked again."""

    pairs: int
    scorers: dict[str, Interval]


@dataclass(slots=True)
class Report:
    generated_at: datetime
    source: str
    since: datetime | None
    route: str | None
    confidence: float
    gates: dict[str, Any]  # the GatesConfig used
    candidates: dict[str, CandidateReport]
    noise: NoiseFloor | None
    primary_latency_histogram: list[int] = field(default_factory=list)
    latency_edges_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def any_failed(self) -> bool:
        return any(c.verdict == "fail" for c in self.candidates.values())


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def report_json(report: Report) -> dict[str, Any]:
    """The `--json` document: `{"candidates": {NAME: {"verdict", "pairs", "gates", ...}}, ...}`."""
    data = _plain(asdict(report))
    # Histograms are for the HTML plots; in JSON they are noise for CI scripts.
    data.pop("primary_latency_histogram", None)
    data.pop("latency_edges_ms", None)
    for candidate in data["candidates"].values():
        candidate.pop("latency_histogram", None)
        for scorer in candidate["scorers"]:
            scorer.pop("histogram", None)
            scorer.pop("noise_histogram", None)
    return data
