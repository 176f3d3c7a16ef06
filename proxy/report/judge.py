"""One candidate's gates: each measure as a confidence sequence, decided against its limit.

`build` computes the evidence (scores, latencies, costs) once; this module turns it into
`GateResult`s with the error levels of `shadowtap.report.gates.Levels`, so every gate of every
candidate is held to the same, stated error control (README "Gates").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from shadowtap.config import GatesConfig
from shadowtap.report import stats
from shadowtap.report.evidence import missing_scores
from shadowtap.report.gates import Levels, decide, no_evidence
from shadowtap.report.measures import Pairs
from shadowtap.report.model import GateResult, LatencySummary
from shadowtap.report.sequences import (
    Moments,
    NormalSequence,
    RateSequence,
    difference_sequence,
)
from shadowtap.report.sources import Source

NO_NOISE_FLOOR = (
    "the drop is bounded against 1.0 (perfect agreement), which over-states it, so it can"
    " pass but never fail. Add a noise floor: [secondary] rate = 0.1 asks the primary's model"
    " again for a share of sampled requests; or, if the primary always answers the same, set"
    " gates.primary_deterministic = true"
)


@dataclass(slots=True)
class Candidate:
    """What every gate of one candidate reads."""

    source: Source
    name: str
    pairs: Pairs
    noise: Pairs | None
    gates: GatesConfig
    levels: Levels


# Reliability gates: gate name -> (config key's check in shadowtap.report.reliability).
RELIABILITY_GATES = {
    "empty_rate": "empty",
    "invalid_json_rate": "invalid_json",
    "schema_invalid_rate": "schema_invalid",
    "invalid_tool_call_rate": "invalid_tool_call",
    "truncation_rate": "truncated",
    "refusal_rate": "refused",
}


def gate_count(gates: GatesConfig, agreement_scorers: list[str]) -> int:
    """How many gates can fail a candidate: the `T` its fail levels are divided by (the slice
    gate counts once; its slices split its share)."""
    count = len(agreement_scorers) if gates.max_agreement_drop is not None else 0
    others = [
        gates.max_p95_latency_ratio,
        gates.max_error_rate,
        gates.max_cost_ratio,
        gates.max_slice_drop,
        *(getattr(gates, f"max_{gate}") for gate in RELIABILITY_GATES),
    ]
    return count + sum(1 for limit in others if limit is not None)


def reliability_gates(c: Candidate, counts: dict[str, tuple[int, int]]) -> list[GateResult]:
    """`max_<check>_rate` gates on the candidate's own answers: counts is check -> (broken,
    applicable answers)."""
    results = []
    for gate, check in RELIABILITY_GATES.items():
        limit = getattr(c.gates, f"max_{gate}")
        if limit is None:
            continue
        broken, applicable = counts.get(check, (0, 0))
        if applicable == 0:
            results.append(
                no_evidence(
                    gate,
                    limit,
                    "not_applicable",
                    f"no successful answer of {c.name} that the {check} check applies to",
                )
            )
            continue
        sequence = RateSequence(
            broken, applicable, c.levels.wrong_fail, c.levels.wrong_pass, center=limit
        )
        note = f"{broken:,} of {applicable:,} applicable answers"
        results.append(decide(gate, sequence, limit, len(c.pairs), note=note))
    return results


def _log_ratio(fixed: stats.Interval, confidence: float, levels: Levels) -> NormalSequence | None:
    """A ratio's anytime sequence on the log scale, its standard error read off the bootstrap
    interval (a ratio's log is close to symmetric, so the interval's log width is 2 z se)."""
    if fixed.estimate is None or fixed.estimate <= 0:
        return None
    if fixed.low is None or fixed.high is None or fixed.low <= 0:
        return None
    error = (math.log(fixed.high) - math.log(fixed.low)) / (2 * stats.z_for(confidence))
    return NormalSequence(
        math.log(fixed.estimate),
        error,
        fixed.n,
        levels.wrong_fail,
        levels.wrong_pass,
        log=True,
    )


def agreement_gates(c: Candidate, scorers: list[str]) -> list[GateResult]:
    """One gate per scorer: noise-floor mean - candidate mean <= max_agreement_drop.

    The comparison rests on the smaller of the two samples: its `n` is min(candidate scores,
    noise-floor scores), and both need `min_pairs` (README "Gates").
    """
    gates, limit = c.gates, c.gates.max_agreement_drop
    if limit is None:
        return []
    results = []
    for scorer in scorers:
        values = c.pairs.scores(scorer)
        if len(values) == 0:
            missing = missing_scores(c.source, c.pairs, c.name, scorer)
            results.append(
                no_evidence("agreement_drop", limit, missing.reason, missing.note, scorer)
            )
            continue
        sample = Moments.of(values)
        floor = c.noise.scores(scorer) if c.noise is not None else np.empty(0)
        if len(floor):
            drop = difference_sequence(
                Moments.of(floor), sample, c.levels.wrong_fail, c.levels.wrong_pass
            )
            fixed = stats.bootstrap_mean_difference(
                floor, values, gates.confidence, f"{c.name}:{scorer}:drop"
            )
            note = f"{len(values):,} candidate vs {len(floor):,} noise-floor scores"
            results.append(
                decide(
                    "agreement_drop",
                    drop,
                    limit,
                    len(c.pairs),
                    min_pairs=gates.min_pairs,
                    fixed=fixed,
                    scorer=scorer,
                    note=note,
                )
            )
            continue
        results.append(_against_one(c, scorer, sample, limit))
    return results


def _against_one(c: Candidate, scorer: str, sample: Moments, limit: float) -> GateResult:
    """The drop if the noise floor were perfect agreement: 1 - the candidate's mean."""
    drop = NormalSequence(
        1 - sample.mean, sample.standard_error, sample.n, c.levels.wrong_fail, c.levels.wrong_pass
    )
    mean = c.pairs.mean(scorer, c.gates.confidence, c.name)
    fixed = stats.Interval(
        None if mean.estimate is None else 1 - mean.estimate,
        None if mean.high is None else 1 - mean.high,
        None if mean.low is None else 1 - mean.low,
        mean.n,
        mean.method,
    )
    pairs, min_pairs = len(c.pairs), c.gates.min_pairs
    if c.gates.primary_deterministic:
        note = "gates.primary_deterministic: the noise floor is 1.0 (perfect agreement)"
        return decide(
            "agreement_drop",
            drop,
            limit,
            pairs,
            min_pairs=min_pairs,
            fixed=fixed,
            scorer=scorer,
            note=note,
        )
    why = "no secondary data"
    if c.noise is not None:
        missing = missing_scores(c.source, c.noise, "secondary", scorer)
        why = f"the secondary has no scores: {missing.note}"
    gate = decide(
        "agreement_drop",
        drop,
        limit,
        pairs,
        min_pairs=min_pairs,
        fixed=fixed,
        scorer=scorer,
        note=f"no noise floor for {scorer} ({why}): {NO_NOISE_FLOOR}",
    )
    if gate.verdict == "fail" or gate.reason == "undecided":
        # Over (or around) the limit against 1.0 says nothing about the real drop, which may be
        # far smaller: only a noise floor can show the candidate is worse.
        gate.verdict, gate.reason = "insufficient", "no_noise_floor"
        estimate = gate.value.estimate
        gate.more_pairs = gate.more_pairs if estimate is not None and estimate < limit else None
    return gate


def latency_gate(c: Candidate, latency: LatencySummary) -> GateResult | None:
    limit = c.gates.max_p95_latency_ratio
    if limit is None:
        return None
    sequence = _log_ratio(latency.ratio_p95, c.gates.confidence, c.levels)
    if sequence is None:
        return no_evidence(
            "p95_latency_ratio",
            limit,
            "no_data",
            f"{latency.pairs:,} requests answered by both sides: no interval of the ratio",
            value=latency.ratio_p95,
        )
    return decide(
        "p95_latency_ratio",
        sequence,
        limit,
        len(c.pairs),
        min_pairs=c.gates.min_pairs,
        fixed=latency.ratio_p95,
    )


def error_gate(c: Candidate, fixed: stats.Interval) -> GateResult | None:
    """Candidate failures on requests the primary answered (a bad request that fails
    everywhere does not count against the candidate)."""
    limit = c.gates.max_error_rate
    if limit is None:
        return None
    answered = c.pairs.count("primary_ok")
    errors = c.pairs.count("primary_ok AND NOT candidate_ok")
    sequence = RateSequence(
        errors, answered, c.levels.wrong_fail, c.levels.wrong_pass, center=limit
    )
    return decide("error_rate", sequence, limit, len(c.pairs), fixed=fixed)


def cost_gate(c: Candidate) -> GateResult | None:
    limit = c.gates.max_cost_ratio
    if limit is None:
        return None
    cost_candidate, cost_primary = c.pairs.paired("cost_usd")
    if len(cost_candidate) and float(np.sum(cost_primary)) > 0:
        fixed = stats.bootstrap_paired(
            cost_candidate, cost_primary, stats.sum_ratio, c.gates.confidence, f"{c.name}:cost"
        )
        sequence = _log_ratio(fixed, c.gates.confidence, c.levels)
        if sequence is not None:
            return decide(
                "cost_ratio",
                sequence,
                limit,
                len(c.pairs),
                min_pairs=c.gates.min_pairs,
                fixed=fixed,
            )
    return no_evidence(
        "cost_ratio",
        limit,
        "no_data",
        "no cost recorded: set price_per_1k_prompt and price_per_1k_completion for the"
        " primary and the candidate",
    )
