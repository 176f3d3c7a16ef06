"""Each slice of one candidate measured like the whole, and the `max_slice_drop` gate.

Intervals are anytime sequences (`shadowtap.report.sequences`). Their low ends are corrected
(Bonferroni) for every slice and scorer measured, so "worse beyond doubt" on one slice out of
many keeps the report's wrong-fail guarantee; their high ends stay at the wrong-pass level,
because the gate passes only when *every* eligible slice passes (intersection-union).

`max_slice_drop` fails a candidate whose agreement on any slice with at least
`min_slice_pairs` scored pairs (candidate and noise floor alike) is worse than that slice's
noise floor by more than the limit, even when the average passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from shadowtap.report.gates import Levels, decide, no_evidence
from shadowtap.report.judge import Candidate
from shadowtap.report.model import GateResult, SliceRow
from shadowtap.report.reliability import CHECKS
from shadowtap.report.sequences import (
    Moments,
    NormalSequence,
    RateSequence,
    difference_sequence,
)
from shadowtap.report.slices import SliceKey
from shadowtap.report.stats import Interval

LATENCY_MIN_PAIRS = 10  # a geometric-mean ratio gets an interval from this many requests on
Checks = dict[str, dict[str, bool | None]]  # request_id -> check -> broken?


@dataclass(slots=True)
class DropTest:
    """One (slice, scorer) comparison the gate may decide."""

    key: SliceKey
    scorer: str
    sequence: NormalSequence
    against_one: bool  # no noise floor on this slice: the drop is bounded against 1.0


def slice_levels(levels: Levels, slices: int, scorers: int) -> Levels:
    return levels.split(max(slices, 1) * max(scorers, 1))


def _rate(hits: int, n: int, levels: Levels) -> Interval:
    return RateSequence(hits, n, levels.wrong_fail, levels.wrong_pass).interval()


def _latency_ratio(records: Iterable[dict], levels: Levels) -> Interval:
    logs = [
        math.log(r["candidate_latency_ms"] / r["primary_latency_ms"])
        for r in records
        if r["primary_ok"]
        and r["candidate_ok"]
        and (r["candidate_latency_ms"] or 0) > 0
        and (r["primary_latency_ms"] or 0) > 0
    ]
    n = len(logs)
    if n == 0:
        return Interval(None, None, None, 0, "none")
    centre = math.fsum(logs) / n
    if n < LATENCY_MIN_PAIRS:
        return Interval(math.exp(centre), None, None, n, "none")
    spread = math.sqrt(math.fsum((v - centre) ** 2 for v in logs) / (n - 1))
    sequence = NormalSequence(
        centre, spread / math.sqrt(n), n, levels.wrong_fail, levels.wrong_pass, log=True
    )
    return sequence.interval()


def measure_slices(
    c: Candidate,
    scorers: list[str],
    slices: dict[SliceKey, set[str]],
    checks: Checks,
) -> tuple[list[SliceRow], list[DropTest]]:
    """Every slice's row (worst first) and the agreement comparisons behind them."""
    levels = slice_levels(c.levels, len(slices), len(scorers))
    by_id = {r["request_id"]: r for r in c.rows.records}
    noise_by_id = {r["request_id"]: r for r in c.noise.records} if c.noise is not None else {}
    rows, tests = [], []
    for key, ids in slices.items():
        members = [by_id[i] for i in ids if i in by_id]
        if not members:
            continue
        floor = [noise_by_id[i] for i in ids if i in noise_by_id]
        drops = {}
        for scorer in scorers:
            test = _drop_test(c, key, scorer, members, floor, levels)
            if test is not None:
                tests.append(test)
                drops[scorer] = test.sequence.interval()
        answered = [r for r in members if r["primary_ok"]]
        outcomes = [checks.get(r["request_id"], {}) for r in members]
        reliability = {}
        for name in CHECKS:
            applicable = [o[name] for o in outcomes if o.get(name) is not None]
            reliability[name] = _rate(sum(1 for v in applicable if v), len(applicable), levels)
        rows.append(
            SliceRow(
                dimension=key.dimension,
                value=key.value,
                pairs=len(members),
                drop=drops,
                error_rate=_rate(
                    sum(1 for r in answered if not r["candidate_ok"]), len(answered), levels
                ),
                reliability=reliability,
                latency_ratio=_latency_ratio(members, levels),
            )
        )
    rows.sort(key=_badness)
    return rows, tests


def _drop_test(
    c: Candidate,
    key: SliceKey,
    scorer: str,
    members: list[dict],
    floor: list[dict],
    levels: Levels,
) -> DropTest | None:
    values = [r["scores"][scorer] for r in members if r["scores"].get(scorer) is not None]
    if not values:
        return None
    sample = Moments.of(values)
    noise = [r["scores"][scorer] for r in floor if r["scores"].get(scorer) is not None]
    if noise:
        sequence = difference_sequence(
            Moments.of(noise), sample, levels.wrong_fail, levels.wrong_pass
        )
        return DropTest(key, scorer, sequence, against_one=False)
    sequence = NormalSequence(
        1 - sample.mean, sample.standard_error, sample.n, levels.wrong_fail, levels.wrong_pass
    )
    return DropTest(key, scorer, sequence, against_one=not c.gates.primary_deterministic)


def _badness(row: SliceRow) -> tuple[float, int, str, str]:
    """Sort key, worst first: the largest quantity the slice is *surely* bad by (the low end
    of its agreement drop, error rate or any breakage rate, all shares in [0, 1]); on a tie
    the smaller slice, which says more precisely where (tools=yes before structured=none when
    both hold the same broken tool calls); then by name, so every source orders alike."""

    def low(value: Interval | None) -> float:
        return -math.inf if value is None or value.low is None else value.low

    values = [*row.drop.values(), row.error_rate, *row.reliability.values()]
    worst = max((low(v) for v in values), default=-math.inf)
    return (-worst, row.pairs, row.dimension, row.value)


def slice_gate(c: Candidate, tests: list[DropTest]) -> GateResult | None:
    """`max_slice_drop`: every slice with `min_slice_pairs` must pass; any failing fails.

    When no dimension splits the traffic, the caller passes the comparison on all traffic:
    the only slice is everything."""
    limit = c.gates.max_slice_drop
    if limit is None:
        return None
    least = c.gates.min_slice_pairs
    eligible = [t for t in tests if t.sequence.n >= least]
    if not eligible:
        gate = no_evidence(
            "slice_drop",
            limit,
            "too_few_pairs",
            f"no slice has {least} scored pairs of the candidate and its noise floor yet"
            " (gates.min_slice_pairs)",
        )
        fullest = max((t.sequence.n for t in tests), default=0)
        if fullest and c.rows.records:  # when the fullest slice would reach it at its share
            gate.more_pairs = math.ceil((least - fullest) * len(c.rows) / fullest)
        return gate
    decided = []
    for test in eligible:
        gate = decide("slice_drop", test.sequence, limit, test.sequence.n, min_pairs=0, plan=False)
        if test.against_one and gate.verdict != "pass":
            gate.verdict, gate.reason = "insufficient", "no_noise_floor"
        decided.append((gate, test))
    order = {"fail": 0, "insufficient": 1, "pass": 2}

    def severity(item: tuple[GateResult, DropTest]) -> tuple[int, float]:
        gate, _ = item
        return (order[gate.verdict], -(gate.value.low if gate.value.low is not None else -1.0))

    decided.sort(key=severity)
    gate, test = decided[0]
    passed = sum(1 for g, _ in decided if g.verdict == "pass")
    gate.scorer, gate.slice = test.scorer, str(test.key)
    gate.more_pairs = None
    gate.note = (
        f"worst: {test.key} ({test.scorer}, {test.sequence.n:,} pairs);"
        f" {passed} of {len(decided)} slice comparisons clear the limit"
    )
    if gate.reason == "no_noise_floor":
        gate.note += "; without a noise floor a slice can pass but not fail"
    return gate
