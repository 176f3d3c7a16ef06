"""`build_report`: from the `pairs` relation of any source to a `Report` with verdicts.

One pass per target pulls the numeric columns of its pairs into Python (the intervals need the
raw values); DuckDB does the filtering and fetches only the few example rows with their texts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shadowtap.config import GatesConfig
from shadowtap.report import stats
from shadowtap.report.checks import JSON_VALIDITY, REFUSAL, named, response_checks, scorer_kinds
from shadowtap.report.gates import decide, overall, skipped
from shadowtap.report.measures import (
    NUMERIC_COLUMNS,
    Rows,
    breakdown,
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
    GateResult,
    LatencySummary,
    NoiseFloor,
    Report,
    ScorerSummary,
)
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


def _agreement_gates(
    name: str, rows: Rows, noise: Rows | None, gates: GatesConfig, notes: list[str]
) -> list[GateResult]:
    if gates.max_agreement_drop is None:
        return []
    limit, results = gates.max_agreement_drop, []
    for scorer in gates.scorers or sorted(rows.scorers()):
        values = rows.scores(scorer)
        if not values:
            results.append(skipped("agreement_drop", limit, "no scores recorded", scorer))
            continue
        floor = noise.scores(scorer) if noise is not None else []
        if floor:
            drop = stats.bootstrap_mean_difference(
                floor, values, gates.confidence, f"{name}:{scorer}:drop"
            )
            note = None
        else:
            # No noise floor: measure against perfect agreement, which over-states the drop.
            mean = rows.mean(scorer, gates.confidence, name)
            drop = stats.Interval(
                None if mean.estimate is None else 1 - mean.estimate,
                None if mean.high is None else 1 - mean.high,
                None if mean.low is None else 1 - mean.low,
                mean.n,
                mean.method,
            )
            note = "no secondary data: drop measured against 1.0 (perfect agreement)"
            if note not in notes:
                notes.append(note)
        results.append(
            decide(
                "agreement_drop",
                drop,
                limit,
                len(rows),
                min_pairs=gates.min_pairs,
                scorer=scorer,
                note=note,
            )
        )
    return results


def _candidate(
    source: Source,
    name: str,
    rows: Rows,
    noise: Rows | None,
    gates: GatesConfig,
    thresholds: dict[str, float],
    kinds: dict[str, str],
    examples: int,
) -> CandidateReport:
    confidence, notes = gates.confidence, []
    scorer_names = sorted(rows.scorers() | (noise.scorers() if noise else set()))
    summaries = []
    for scorer in scorer_names:
        values = rows.scores(scorer)
        floor = noise.scores(scorer) if noise else []
        threshold = thresholds.get(scorer)
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

    gate_results = _agreement_gates(name, rows, noise, gates, notes)
    latency = _latency(rows, "latency_ms", confidence, f"{name}:latency")
    ttft = _latency(rows, "ttft_ms", confidence, f"{name}:ttft")
    if gates.max_p95_latency_ratio is not None:
        gate_results.append(
            decide(
                "p95_latency_ratio",
                latency.ratio_p95,
                gates.max_p95_latency_ratio,
                len(rows),
                min_pairs=gates.min_pairs,
            )
        )

    answered = [r for r in rows.records if r["primary_ok"]]
    error_rate = stats.wilson(
        sum(1 for r in answered if not r["candidate_ok"]), len(answered), confidence
    )
    if gates.max_error_rate is not None:
        gate_results.append(
            decide(
                "error_rate",
                error_rate,
                gates.max_error_rate,
                len(rows),
                confidence=confidence,
            )
        )

    if gates.max_cost_ratio is not None:
        cost_candidate, cost_primary = rows.paired("cost_usd")
        if cost_candidate and math.fsum(cost_primary) > 0:
            ratio = stats.bootstrap_paired(
                cost_candidate, cost_primary, stats.sum_ratio, confidence, f"{name}:cost"
            )
            gate = decide(
                "cost_ratio", ratio, gates.max_cost_ratio, len(rows), min_pairs=gates.min_pairs
            )
        else:
            gate = skipped(
                "cost_ratio", gates.max_cost_ratio, "no cost recorded (set prices in the config)"
            )
        gate_results.append(gate)

    verdict, more = overall(gate_results)
    present = rows.scorers()
    checks = response_checks(source, name, kinds, present, confidence)
    validity = named(kinds, JSON_VALIDITY, present)
    refusal = named(kinds, REFUSAL, present)
    valid = rows.scores(validity) if validity else []
    refusals = rows.scores(refusal) if refusal else []
    # Examples rank by the comparing scorers: a per-response check is not a disagreement.
    agreement_scorers = [
        s for s in (gates.scorers or scorer_names) if s not in (validity, refusal)
    ] or scorer_names
    ranked = rank_disagreeing(rows, agreement_scorers, examples)
    scores_by_id = {r["request_id"]: r["scores"] for r in rows.records}
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
        json_valid=checks.json_valid
        or (
            stats.wilson(sum(1 for v in valid if v >= 0.5), len(valid), confidence)
            if valid
            else None
        ),
        json_valid_primary=checks.json_valid_primary,
        refusal_rate=checks.refusal_rate,
        refusal_rate_primary=checks.refusal_rate_primary,
        refusal_mismatch=(
            stats.wilson(sum(1 for v in refusals if v < 0.5), len(refusals), confidence)
            if refusals
            else None
        ),
        breakdown=breakdown(rows, agreement_scorers),
        examples=fetch_examples(source, name, ranked, scores_by_id),
        notes=notes,
    )


def _filter(source: Source, since: datetime | None, route: str | None) -> None:
    """Materialize the selected pairs once: every later query reads this small table."""
    clauses, params = [], []
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
    scorers: Mapping[str, Mapping[str, Any]] | None = None,
) -> Report:
    """Measure every candidate (or the named ones) and decide each against `gates`.

    `scorers` is the config's [scorers] tables (name -> {"type": ..., "threshold": ...}), used
    where the source does not say: which stored scorer is the JSON-validity or refusal check
    (the stored details tell too), and thresholds the live API does not carry.

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
    thresholds = {
        name: float(table["threshold"])
        for name, table in tables.items()
        if isinstance(table.get("threshold"), int | float)
    }
    thresholds.update(con.execute("SELECT scorer, threshold FROM thresholds").fetchall())
    kinds = scorer_kinds(
        source, {n: t["type"] for n, t in tables.items() if isinstance(t.get("type"), str)}
    )

    def fetch(target: str) -> Rows:
        columns = ", ".join(NUMERIC_COLUMNS)
        query = f"SELECT {columns} FROM report_pairs WHERE target = ? ORDER BY request_id"
        return Rows(con.execute(query, [target]).fetchall())

    noise = fetch("secondary") if "secondary" in roles else None
    notes = list(source.notes)
    if noise is None:
        notes.append(
            "no secondary (noise floor) data: agreement is judged against perfect agreement;"
            " set [secondary] rate to measure how much the primary disagrees with itself"
        )
    all_rows = {name: fetch(name) for name in present}
    seen = {s for rows in all_rows.values() for s in rows.scorers()}
    if noise is not None:
        seen |= noise.scorers()
    missing = [s for s in gates.scorers or [] if s not in seen]
    if missing:
        notes.append(
            f"gates.scorers names {', '.join(missing)}, which scored no pair in the selection"
            " (a typo, or a scorer that never applied): its agreement gate is skipped"
        )
    unknown = sorted(seen - set(thresholds))
    if unknown:
        notes.append(
            f"no threshold known for {', '.join(unknown)}: the source does not store them"
            " (the live API does not); pass --config to take them from [scorers]"
        )
    reports = {
        name: _candidate(source, name, rows, noise, gates, thresholds, kinds, examples)
        for name, rows in all_rows.items()
    }

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
