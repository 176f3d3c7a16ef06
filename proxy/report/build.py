"""`build_report`: from the `pairs` relation of any source to a `Report` with verdicts.

The selection is materialised once as compact columns (`shadowtap.report.selection`); DuckDB
computes counts, rates, per-slice groups and example rankings there, and hands single columns
to numpy where the intervals need per-pair values. Nothing held in Python grows with the
number of pairs beyond a few numpy columns of one target (8 bytes a pair each), so 10 million
pairs fit in the memory 10 thousand took as Python rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
from shadowtap.config import GatesConfig, ScorerSpec
from shadowtap.report import stats
from shadowtap.report.checks import JSON_VALIDITY, REFUSAL, named, scorer_kinds
from shadowtap.report.gates import Levels, overall
from shadowtap.report.judge import (
    Candidate,
    agreement_gates,
    cost_gate,
    error_gate,
    gate_count,
    latency_gate,
    reliability_gates,
)
from shadowtap.report.measures import (
    Pairs,
    fetch_examples,
    latency_edges,
    latency_histogram,
    present_scorers,
    rank_disagreeing,
    score_histogram,
    share_under,
    usage,
)
from shadowtap.report.model import (
    CandidateReport,
    LatencySummary,
    NoiseFloor,
    Report,
    ScorerSummary,
    SliceRow,
)
from shadowtap.report.replayed import mark_replayed, replayed_pairs
from shadowtap.report.selection import dimension_columns, select_pairs
from shadowtap.report.sequences import RateSequence
from shadowtap.report.slice_measures import measure_slices, slice_gate
from shadowtap.report.slices import BUILT_IN, Dimension, split_by
from shadowtap.report.sources import Source, SourceError, open_path


def _latency(pairs: Pairs, metric: str, confidence: float, label: str) -> LatencySummary:
    candidate, primary = pairs.paired(metric)
    ratios = stats.bootstrap_quantile_ratios(candidate, primary, (0.5, 0.95), confidence, label)
    return LatencySummary(
        metric=metric,
        pairs=len(candidate),
        primary=stats.summary_percentiles(primary),
        candidate=stats.summary_percentiles(candidate),
        ratio_p50=ratios[0.5],
        ratio_p95=ratios[0.95],
    )


@dataclass(slots=True)
class Context:
    """What every candidate of one report is measured against."""

    source: Source
    noise: Pairs | None
    gates: GatesConfig
    thresholds: dict[str, float]
    kinds: dict[str, str]
    examples: int
    configured: set[str]  # the config's scorer names
    candidates: int  # how many the report shows: the wrong-pass level is split among them
    slices: list[Dimension]  # the dimensions that split the selection


def _rates(counts: dict[str, tuple[int, int]], levels: Levels) -> dict[str, stats.Interval]:
    return {
        name: RateSequence(hits, n, levels.wrong_fail, levels.wrong_pass).interval()
        for name, (hits, n) in counts.items()
    }


WORST_SLICES_SHOWN = 3  # slices whose most disagreeing pairs the HTML shows side by side
EXAMPLES_PER_SLICE = 2


def _slice_examples(ctx: Context, pairs: Pairs, worst: list[SliceRow]) -> None:
    """The most disagreeing pairs of each of the worst slices, by every scorer the slice's
    pairs have (on a tool-call slice that is the tool_calls scorer, not the text one)."""
    dimensions = {d.name: d for d in ctx.slices}
    for row in worst:
        dimension = dimensions.get(row.dimension)
        if dimension is None:
            continue
        member = f"{dimension.value_sql()} = $value"
        names = sorted(present_scorers(pairs, member, value=row.value))
        ranked = rank_disagreeing(pairs, names, EXAMPLES_PER_SLICE, member, value=row.value)
        row.examples = fetch_examples(pairs, ctx.source, ranked)


def _candidate(ctx: Context, name: str, pairs: Pairs) -> CandidateReport:
    gates, noise = ctx.gates, ctx.noise
    confidence, notes = gates.confidence, list[str]()
    if pairs.not_sent:
        notes.append(
            f"{pairs.not_sent} requests were not sent to {name} (no faithful translation into "
            "its API; responses.error says why) and are not part of its pairs."
        )
    # Every scorer anyone has: the config, the noise floor and the candidate itself. A scorer
    # missing from the candidate's pairs is a gate without evidence, not one to leave out.
    scorer_names = sorted(ctx.configured | pairs.scorers() | (noise.scorers() if noise else set()))
    summaries = []
    for scorer in scorer_names:
        values = pairs.scores(scorer)
        floor = noise.scores(scorer) if noise else np.empty(0)
        threshold = ctx.thresholds.get(scorer)
        summaries.append(
            ScorerSummary(
                scorer=scorer,
                candidate=pairs.mean(scorer, confidence, name),
                noise=(
                    noise.mean(scorer, confidence, "secondary") if noise and len(floor) else None
                ),
                threshold=threshold,
                under_threshold=share_under(values, threshold, confidence),
                noise_under_threshold=share_under(floor, threshold, confidence),
                histogram=score_histogram(values),
                noise_histogram=score_histogram(floor),
            )
        )

    agreement = gates.scorers or scorer_names
    levels = Levels.of(confidence, ctx.candidates, gate_count(gates, agreement))
    judged = Candidate(ctx.source, name, pairs, noise, gates, levels)
    latency = _latency(pairs, "latency_ms", confidence, f"{name}:latency")
    ttft = _latency(pairs, "ttft_ms", confidence, f"{name}:ttft")
    error_rate = stats.wilson(
        pairs.count("primary_ok AND NOT candidate_ok"), pairs.count("primary_ok"), confidence
    )
    counts = pairs.check_counts("candidate")
    slices, tests = measure_slices(judged, agreement, ctx.slices)
    if not ctx.slices:  # nothing splits the traffic: the one slice is all of it
        tests = measure_slices(judged, agreement, [])[1]
        slices = []
    gate_results = agreement_gates(judged, agreement) + [
        gate
        for gate in (
            latency_gate(judged, latency),
            error_gate(judged, error_rate),
            cost_gate(judged),
            *reliability_gates(judged, counts),
            slice_gate(judged, tests),
        )
        if gate is not None
    ]

    verdict, more = overall(gate_results)
    present = pairs.scorers()
    validity = named(ctx.kinds, JSON_VALIDITY, present)
    refusal = named(ctx.kinds, REFUSAL, present)
    # Examples rank by the comparing scorers: a per-response check is not a disagreement.
    agreement_scorers = [s for s in agreement if s not in (validity, refusal)] or scorer_names
    ranked = rank_disagreeing(pairs, agreement_scorers, ctx.examples)
    _slice_examples(ctx, pairs, slices[:WORST_SLICES_SHOWN])
    return CandidateReport(
        name=name,
        verdict=verdict,
        pairs=len(pairs),
        gates=gate_results,
        more_pairs=more,
        scorers=summaries,
        latency=latency,
        ttft=ttft,
        error_rate=error_rate,
        error_rate_all=stats.wilson(pairs.count("NOT candidate_ok"), len(pairs), confidence),
        primary_error_rate=stats.wilson(pairs.count("NOT primary_ok"), len(pairs), confidence),
        usage_primary=usage(pairs, "primary"),
        usage_candidate=usage(pairs, "candidate"),
        reliability=_rates(counts, levels),
        reliability_primary=_rates(pairs.check_counts("primary"), levels),
        slices=slices,
        examples=fetch_examples(pairs, ctx.source, ranked),
        levels={"wrong_pass": levels.wrong_pass, "wrong_fail": levels.wrong_fail},
        notes=notes,
    )


# The primary's latency once per request (a request shadowed to two candidates is one primary
# answer), and each candidate's own, over the candidates shown.
PRIMARY_LATENCIES = """
SELECT any_value(primary_latency_ms) AS v FROM report_pairs
WHERE list_contains($targets, target) AND sent AND primary_ok AND primary_latency_ms IS NOT NULL
GROUP BY request_id
"""
CANDIDATE_LATENCIES = """
SELECT candidate_latency_ms AS v FROM report_pairs
WHERE list_contains($targets, target) AND sent AND candidate_ok
    AND candidate_latency_ms IS NOT NULL
"""


PRIMARY_LATENCY_TABLE = "report_primary_latencies"


def _latency_histograms(
    con: duckdb.DuckDBPyConnection, reports: dict[str, CandidateReport], targets: list[str]
) -> tuple[list[float], list[int]]:
    """Shared log-spaced edges over every latency shown; each candidate's histogram on them
    (set on its report) and the primary's (returned).

    The primary's latencies are grouped by request once, into a table both the edges and its
    histogram read: the grouping is most of the cost (~3 CPU-s at 10 million pairs)."""
    con.execute(
        f"CREATE OR REPLACE TEMPORARY TABLE {PRIMARY_LATENCY_TABLE} AS {PRIMARY_LATENCIES}",
        {"targets": targets},
    )
    primary = f"SELECT v FROM {PRIMARY_LATENCY_TABLE}"
    try:
        span = con.execute(
            f"SELECT min(v) FILTER (WHERE v > 0), max(v) FILTER (WHERE v > 0)"
            f" FROM ({primary} UNION ALL {CANDIDATE_LATENCIES})",
            {"targets": targets},
        ).fetchone()
        edges = latency_edges(*(span or (None, None)))
        for name in targets:
            reports[name].latency_histogram = latency_histogram(
                con, CANDIDATE_LATENCIES, edges, {"targets": [name]}
            )
        return edges, latency_histogram(con, primary, edges, {})
    finally:
        con.execute(f"DROP TABLE {PRIMARY_LATENCY_TABLE}")


def build_report(
    source: Source | str | Path,
    gates: GatesConfig,
    since: datetime | None = None,
    candidates: Sequence[str] | None = None,
    route: str | None = None,
    examples: int = 5,
    scorers: Mapping[str, ScorerSpec] | None = None,
    slice_by: Sequence[str] = (),
) -> Report:
    """Measure every candidate (or the named ones) and decide each against `gates`.

    `scorers` is the config's resolved [scorers] (`Config.scorers`: name -> spec), used
    where the source does not say: which stored scorer is the JSON-validity or refusal check
    (the stored details tell too), and thresholds the live API does not carry. `slice_by` is
    `[report] slice_by`: the request fields and headers to slice by besides the built-in ones.

    Raises `SourceError` (one line) when a named candidate has no pairs in the selection.
    """
    if not isinstance(source, Source):
        source = open_path(source)
    selection = select_pairs(source, since, route, slice_by)
    con = source.con
    roles = dict(
        con.execute("SELECT target, any_value(role) FROM report_pairs GROUP BY target").fetchall()
    )
    present = sorted(t for t, role in roles.items() if role == "candidate")
    if candidates:
        unknown = [c for c in candidates if c not in present]
        if unknown:
            raise SourceError(
                f"no pairs for candidate {', '.join(unknown)} in the selection"
                f" (candidates with pairs: {', '.join(present) or 'none'})"
            )
        present = [c for c in present if c in candidates]
    tables = scorers or {}
    thresholds = {name: spec.threshold for name, spec in tables.items()}
    thresholds.update(con.execute("SELECT scorer, threshold FROM thresholds").fetchall())
    kinds = scorer_kinds(source, {name: spec.kind for name, spec in tables.items()})

    noise = Pairs(con, "secondary", selection) if "secondary" in roles else None
    notes = list(source.notes)
    if noise is None and gates.max_agreement_drop is not None:
        notes.append(
            "no secondary (noise floor) data: the agreement drop is bounded against perfect"
            " agreement, so it can pass but not fail"
            + (
                " (gates.primary_deterministic says 1.0 is the true floor: it can fail too)"
                if gates.primary_deterministic
                else "; set [secondary] rate (e.g. 0.1) to measure how much the primary"
                " disagrees with itself"
            )
        )
    all_rows = {name: Pairs(con, name, selection) for name in present}
    seen = {s for rows in all_rows.values() for s in rows.scorers()}
    if noise is not None:
        seen |= noise.scorers()
    missing = [s for s in gates.scorers or [] if s not in seen]
    if missing:
        notes.append(
            f"gates.scorers names {', '.join(missing)}, which scored no pair in the selection"
            " (a typo, or a scorer that never applied): its agreement gate has no evidence"
        )
    unknown = sorted(seen - set(thresholds))
    if unknown:
        notes.append(
            f"no threshold known for {', '.join(unknown)}: the source does not store them"
            " (the live API does not); pass --config to take them from [scorers]"
        )
    slices = split_by(source, [*BUILT_IN, *slice_by], dimension_columns(slice_by))
    ctx = Context(
        source, noise, gates, thresholds, kinds, examples, set(tables), len(all_rows), slices
    )
    reports = {name: _candidate(ctx, name, rows) for name, rows in all_rows.items()}
    for name, count in replayed_pairs(con).items():
        if name in reports:
            mark_replayed(reports[name], count)

    edges, primary_histogram = _latency_histograms(con, reports, list(all_rows))
    return Report(
        generated_at=datetime.now(UTC),
        source=source.description,
        since=since,
        route=route,
        confidence=gates.confidence,
        gates=gates.model_dump(),
        candidates=reports,
        noise=(
            NoiseFloor(
                pairs=len(noise),
                scorers={
                    s: noise.mean(s, gates.confidence, "secondary") for s in sorted(noise.scorers())
                },
            )
            if noise is not None
            else None
        ),
        primary_latency_histogram=primary_histogram,
        latency_edges_ms=edges,
        notes=notes,
    )
