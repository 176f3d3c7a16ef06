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
from dataclasses import dataclass

from shadowtap.report.answer_checks import check_sql
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
from shadowtap.report.slices import Dimension, SliceKey
from shadowtap.report.stats import Interval

LATENCY_MIN_PAIRS = 10  # a geometric-mean ratio gets an interval from this many requests on
ALL = SliceKey("all", "all")  # the one slice when no dimension splits the traffic


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


def _latency_ratio(n: int, centre: float | None, spread: float | None, levels: Levels) -> Interval:
    """Geometric mean of candidate / primary latency from the logs' count, mean and sd."""
    if n == 0 or centre is None:
        return Interval(None, None, None, 0, "none")
    if n < LATENCY_MIN_PAIRS:
        return Interval(math.exp(centre), None, None, n, "none")
    sequence = NormalSequence(
        centre, (spread or 0.0) / math.sqrt(n), n, levels.wrong_fail, levels.wrong_pass, log=True
    )
    return sequence.interval()


def _aggregates(scorers: list[str]) -> list[str]:
    """Per slice: pairs, answered, errors, each check's (broken, applicable), the latency
    logs' (n, mean, sd), then per scorer the candidate's and the noise floor's (n, mean,
    var_pop)."""
    parts = [
        "count(*) FILTER (WHERE mine)",
        "count(*) FILTER (WHERE mine AND primary_ok)",
        "count(*) FILTER (WHERE mine AND primary_ok AND NOT candidate_ok)",
    ]
    for name in CHECKS:
        flag = check_sql("candidate", name)
        parts += [f"count(*) FILTER (WHERE mine AND {flag})", f"count({flag}) FILTER (WHERE mine)"]
    parts += [f"{f}(log_ratio) FILTER (WHERE mine)" for f in ("count", "avg", "stddev_samp")]
    for i in range(len(scorers)):
        for who in ("mine", "floor"):
            parts += [f"{f}(s{i}) FILTER (WHERE {who})" for f in ("count", "avg", "var_pop")]
    return parts


SLICES_SQL = """
SELECT {outer_keys}, {aggregates}
FROM (
    SELECT {inner_keys}, primary_ok, candidate_ok, candidate_checks,
        target = $target AS mine, {floor} AS floor, {scores}
        CASE WHEN primary_ok AND candidate_ok AND candidate_latency_ms > 0
                  AND primary_latency_ms > 0
             THEN ln(candidate_latency_ms / primary_latency_ms) END AS log_ratio
    FROM report_pairs WHERE sent AND target IN ($target, 'secondary')
)
GROUP BY GROUPING SETS ({sets})
"""


def measure_slices(
    c: Candidate, scorers: list[str], dimensions: list[Dimension]
) -> tuple[list[SliceRow], list[DropTest]]:
    """Every slice's row (worst first) and the agreement comparisons behind them: one GROUP BY
    over the candidate's and the noise floor's pairs. Without `dimensions` the one slice is
    all of the candidate's traffic, its noise floor that on the same requests."""
    if dimensions:
        keys = [(d.name, d.value_sql()) for d in dimensions]
        count = sum(len(d.values) for d in dimensions)
        floor = "target = 'secondary'"
    else:
        keys, count = [(ALL.dimension, f"'{ALL.value}'")], 1
        floor = (
            "target = 'secondary' AND request_id IN (SELECT request_id FROM report_pairs"
            " WHERE target = $target AND sent)"
        )
    levels = slice_levels(c.levels, count, len(scorers))
    params: dict[str, object] = {"target": c.name}
    sql = SLICES_SQL.format(
        outer_keys=", ".join(f"g{i}" for i in range(len(keys))),
        inner_keys=", ".join(f"{value} AS g{i}" for i, (_, value) in enumerate(keys)),
        aggregates=", ".join(_aggregates(scorers)),
        floor=floor,
        scores="".join(f"{c.pairs.selection.score(n)} AS s{i}, " for i, n in enumerate(scorers)),
        sets=", ".join(f"(g{i})" for i in range(len(keys))),
    )
    rows, tests = [], []
    for found in c.source.con.execute(sql, params).fetchall():
        index = next(i for i in range(len(keys)) if found[i] is not None)
        key = SliceKey(keys[index][0], str(found[index]))
        pairs, answered, errors, *rest = found[len(keys) :]
        if not pairs:
            continue  # requests of this slice, none of them this candidate's
        checks, rest = rest[: 2 * len(CHECKS)], rest[2 * len(CHECKS) :]
        latency, rest = rest[:3], rest[3:]
        drops = {}
        for i, scorer in enumerate(scorers):
            mine = Moments.of_sums(*rest[6 * i : 6 * i + 3])
            noise = Moments.of_sums(*rest[6 * i + 3 : 6 * i + 6])
            test = _drop_test(c, key, scorer, mine, noise, levels)
            if test is not None:
                tests.append(test)
                drops[scorer] = test.sequence.interval()
        rows.append(
            SliceRow(
                dimension=key.dimension,
                value=key.value,
                pairs=int(pairs),
                drop=drops,
                error_rate=_rate(int(errors), int(answered), levels),
                reliability={
                    name: _rate(int(checks[2 * i]), int(checks[2 * i + 1]), levels)
                    for i, name in enumerate(CHECKS)
                },
                latency_ratio=_latency_ratio(int(latency[0]), latency[1], latency[2], levels),
            )
        )
    rows.sort(key=_badness)
    tests.sort(key=lambda t: (t.key.dimension, t.key.value, scorers.index(t.scorer)))
    return rows, tests


def _drop_test(
    c: Candidate,
    key: SliceKey,
    scorer: str,
    sample: Moments,
    noise: Moments,
    levels: Levels,
) -> DropTest | None:
    if sample.n == 0:
        return None
    if noise.n:
        sequence = difference_sequence(noise, sample, levels.wrong_fail, levels.wrong_pass)
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
        if fullest and len(c.pairs):  # when the fullest slice would reach it at its share
            gate.more_pairs = math.ceil((least - fullest) * len(c.pairs) / fullest)
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
