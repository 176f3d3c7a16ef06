"""`build_report`: from the `pairs` relation of any source to a `Report` with verdicts.

One pass per target pulls the numeric columns of its pairs into Python (the intervals need the
raw values); DuckDB does the filtering and fetches only the few example rows with their texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
    NUMERIC_COLUMNS,
    Rows,
    fetch_examples,
    latency_edges,
    latency_histogram,
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
from shadowtap.report.reliability import CHECKS, answers, check
from shadowtap.report.replayed import mark_replayed, replayed_pairs
from shadowtap.report.sequences import RateSequence
from shadowtap.report.slice_measures import measure_slices, slice_gate
from shadowtap.report.slices import SliceKey, prepare, request_values, slices_of
from shadowtap.report.sources import Source, SourceError, open_path


def _latency(rows: Rows, metric: str, confidence: float, label: str) -> LatencySummary:
    candidate, primary = rows.paired(metric)
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
    noise: Rows | None
    gates: GatesConfig
    thresholds: dict[str, float]
    kinds: dict[str, str]
    examples: int
    configured: set[str]  # the config's scorer names
    candidates: int  # how many the report shows: the wrong-pass level is split among them
    slices: dict[SliceKey, set[str]]


def _counts(outcomes: Iterable[dict[str, bool | None]]) -> dict[str, tuple[int, int]]:
    """check -> (broken, applicable) over answers."""
    counts = {name: [0, 0] for name in CHECKS}
    for outcome in outcomes:
        for name, broken in outcome.items():
            if broken is not None:
                counts[name][0] += broken
                counts[name][1] += 1
    return {name: (hits, n) for name, (hits, n) in counts.items()}


def _rates(counts: dict[str, tuple[int, int]], levels: Levels) -> dict[str, stats.Interval]:
    return {
        name: RateSequence(hits, n, levels.wrong_fail, levels.wrong_pass).interval()
        for name, (hits, n) in counts.items()
    }


WORST_SLICES_SHOWN = 3  # slices whose most disagreeing pairs the HTML shows side by side
EXAMPLES_PER_SLICE = 2


def _slice_examples(
    ctx: Context,
    name: str,
    rows: Rows,
    worst: list[SliceRow],
    scores: dict[str, dict[str, float | None]],
) -> None:
    """The most disagreeing pairs of each of the worst slices, by every scorer the pairs have
    (on a tool-call slice that is the tool_calls scorer, not the text one)."""
    for row in worst:
        ids = ctx.slices.get(SliceKey(row.dimension, row.value), set())
        members = Rows.of([r for r in rows.records if r["request_id"] in ids])
        ranked = rank_disagreeing(members, sorted(members.scorers()), EXAMPLES_PER_SLICE)
        row.examples = fetch_examples(ctx.source, name, ranked, scores)


def _candidate(ctx: Context, name: str, rows: Rows) -> CandidateReport:
    gates, noise = ctx.gates, ctx.noise
    confidence, notes = gates.confidence, list[str]()
    if rows.not_sent:
        notes.append(
            f"{rows.not_sent} requests were not sent to {name} (no faithful translation into "
            "its API; responses.error says why) and are not part of its pairs."
        )
    # Every scorer anyone has: the config, the noise floor and the candidate itself. A scorer
    # missing from the candidate's rows is a gate without evidence, not one to leave out.
    scorer_names = sorted(ctx.configured | rows.scorers() | (noise.scorers() if noise else set()))
    summaries = []
    for scorer in scorer_names:
        values = rows.scores(scorer)
        floor = noise.scores(scorer) if noise else []
        threshold = ctx.thresholds.get(scorer)
        summaries.append(
            ScorerSummary(
                scorer=scorer,
                candidate=rows.mean(scorer, confidence, name),
                noise=noise.mean(scorer, confidence, "secondary") if noise and floor else None,
                threshold=threshold,
                under_threshold=share_under(values, threshold, confidence),
                noise_under_threshold=share_under(floor, threshold, confidence),
                histogram=score_histogram(values),
                noise_histogram=score_histogram(floor),
            )
        )

    agreement = gates.scorers or scorer_names
    levels = Levels.of(confidence, ctx.candidates, gate_count(gates, agreement))
    judged = Candidate(ctx.source, name, rows, noise, gates, levels)
    latency = _latency(rows, "latency_ms", confidence, f"{name}:latency")
    ttft = _latency(rows, "ttft_ms", confidence, f"{name}:ttft")
    answered = [r for r in rows.records if r["primary_ok"]]
    error_rate = stats.wilson(
        sum(1 for r in answered if not r["candidate_ok"]), len(answered), confidence
    )
    con = ctx.source.con
    checks = {a.request_id: check(a) for a in answers(con, name, "candidate")}
    primary_checks = [check(a) for a in answers(con, name, "primary")]
    counts = _counts(checks.values())
    slices, tests = measure_slices(judged, agreement, ctx.slices, checks)
    if not ctx.slices:  # nothing splits the traffic: the one slice is all of it
        everything = {SliceKey("all", "all"): {r["request_id"] for r in rows.records}}
        tests = measure_slices(judged, agreement, everything, checks)[1]
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
    present = rows.scorers()
    validity = named(ctx.kinds, JSON_VALIDITY, present)
    refusal = named(ctx.kinds, REFUSAL, present)
    # Examples rank by the comparing scorers: a per-response check is not a disagreement.
    agreement_scorers = [s for s in agreement if s not in (validity, refusal)] or scorer_names
    ranked = rank_disagreeing(rows, agreement_scorers, ctx.examples)
    scores_by_id = {r["request_id"]: r["scores"] for r in rows.records}
    _slice_examples(ctx, name, rows, slices[:WORST_SLICES_SHOWN], scores_by_id)
    return CandidateReport(
        name=name,
        verdict=verdict,
        pairs=len(rows),
        gates=gate_results,
        more_pairs=more,
        scorers=summaries,
        latency=latency,
        ttft=ttft,
        error_rate=error_rate,
        error_rate_all=stats.wilson(
            sum(1 for r in rows.records if not r["candidate_ok"]), len(rows), confidence
        ),
        primary_error_rate=stats.wilson(
            sum(1 for r in rows.records if not r["primary_ok"]), len(rows), confidence
        ),
        usage_primary=usage(rows, "primary"),
        usage_candidate=usage(rows, "candidate"),
        reliability=_rates(counts, levels),
        reliability_primary=_rates(_counts(primary_checks), levels),
        slices=slices,
        examples=fetch_examples(ctx.source, name, ranked, scores_by_id),
        levels={"wrong_pass": levels.wrong_pass, "wrong_fail": levels.wrong_fail},
        notes=notes,
    )


def _filter(source: Source, since: datetime | None, route: str | None) -> None:
    """Materialize the selected pairs once: every later query reads this small table."""
    clauses: list[str] = []
    params: list[object] = []
    if since is not None:
        clauses.append("started_at >= ?")
        params.append(since)
    if route is not None:
        clauses.append("route = ?")
        params.append(route)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    source.con.execute(
        f"CREATE OR REPLACE TEMPORARY TABLE report_pairs AS SELECT * FROM pairs {where}", params
    )


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
    _filter(source, since, route)
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

    def fetch(target: str) -> Rows:
        columns = ", ".join(NUMERIC_COLUMNS)
        query = f"SELECT {columns} FROM report_pairs WHERE target = ? ORDER BY request_id"
        return Rows(con.execute(query, [target]).fetchall())

    noise = fetch("secondary") if "secondary" in roles else None
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
    all_rows = {name: fetch(name) for name in present}
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
    dimensions = prepare(source, slice_by)
    slices = slices_of(dimensions, request_values(source, dimensions))
    ctx = Context(
        source, noise, gates, thresholds, kinds, examples, set(tables), len(all_rows), slices
    )
    reports = {name: _candidate(ctx, name, rows) for name, rows in all_rows.items()}
    for name, count in replayed_pairs(con).items():
        if name in reports:
            mark_replayed(reports[name], count)

    primary_latency = {
        r["request_id"]: r["primary_latency_ms"]
        for rows in all_rows.values()
        for r in rows.records
        if r["primary_ok"] and r["primary_latency_ms"] is not None
    }
    everything = list(primary_latency.values()) + [
        r["candidate_latency_ms"]
        for rows in all_rows.values()
        for r in rows.records
        if r["candidate_ok"] and r["candidate_latency_ms"] is not None
    ]
    edges = latency_edges(everything)
    for name, rows in all_rows.items():
        values = [
            r["candidate_latency_ms"]
            for r in rows.records
            if r["candidate_ok"] and r["candidate_latency_ms"] is not None
        ]
        reports[name].latency_histogram = latency_histogram(values, edges)

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
        primary_latency_histogram=latency_histogram(primary_latency.values(), edges),
        latency_edges_ms=edges,
        notes=notes,
    )
