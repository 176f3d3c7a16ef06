"""The anytime intervals that decide gates, against their defining equations and brute force;
the gate arithmetic on top of them. (Peeking, simulated: tests/test_report_peeking.py.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from statistics import NormalDist

import pytest
from shadowtap.report import stats
from shadowtap.report.gates import Levels, decide, more_pairs_needed, overall
from shadowtap.report.sequences import (
    RHO,
    TUNED_FOR_PAIRS,
    Moments,
    NormalSequence,
    RateSequence,
    difference_sequence,
    normal_multiplier,
)

STANDARD = NormalDist()


@pytest.mark.parametrize("alpha", [0.025, 0.0025])
@pytest.mark.parametrize("n", [30, 500, 20_000])
def test_the_normal_boundary_solves_the_mixture_equation(n: int, alpha: float) -> None:
    u = normal_multiplier(n, alpha) * math.sqrt(n)
    mixture = (
        2
        * math.sqrt(RHO / (n + RHO))
        * math.exp(u * u / (2 * (n + RHO)))
        * STANDARD.cdf(u / math.sqrt(n + RHO))
    )
    assert mixture == pytest.approx(1 / alpha, rel=1e-9)


def test_the_price_of_looking_at_every_n() -> None:
    # Wider than the fixed-sample z at every n, narrowest around the tuned size, and growing
    # only like sqrt(log n) beyond it.
    fixed = STANDARD.inv_cdf(1 - 0.025)
    widths = {n: normal_multiplier(n, 0.025) for n in (50, 200, TUNED_FOR_PAIRS, 5_000, 10**6)}
    assert all(width > fixed for width in widths.values())
    assert widths[TUNED_FOR_PAIRS] == min(widths.values())
    assert widths[TUNED_FOR_PAIRS] == pytest.approx(3.04, abs=0.01)
    assert widths[10**6] < 1.25 * widths[5_000]
    assert normal_multiplier(500, 0.0025) > normal_multiplier(500, 0.025)


def test_sequence_ends_carry_their_own_levels() -> None:
    sequence = NormalSequence(0.0, 0.01, 400, low_alpha=0.001, high_alpha=0.025)
    interval = sequence.interval()
    assert interval.low is not None and interval.high is not None
    assert -interval.low > interval.high > 0  # the rarer error gets the wider side
    assert interval.high == pytest.approx(0.01 * normal_multiplier(400, 0.025))
    ratio = NormalSequence(math.log(2.0), 0.05, 400, 0.025, 0.025, log=True).interval()
    assert ratio.estimate == pytest.approx(2.0)
    assert ratio.low is not None and ratio.high is not None
    assert ratio.low * ratio.high == pytest.approx(4.0)  # symmetric on the log scale


def test_moments_and_a_sample_without_spread() -> None:
    values = [0.2, 0.4, 0.9, 1.0]
    moments = Moments.of(values)
    assert moments.mean == pytest.approx(0.625)
    assert moments.m2 == pytest.approx(sum((v - 0.625) ** 2 for v in values))
    # All-agreeing pairs keep a width: one pseudo-observation of variance 1/4.
    agreeing = Moments.of([1.0] * 99)
    assert agreeing.variance == pytest.approx(0.25 / 100)
    drop = difference_sequence(Moments.of([0.9] * 50), Moments.of([0.8] * 400), 0.025, 0.025)
    assert drop.n == 50 and drop.estimate == pytest.approx(0.1)


def log_mixture(successes: int, n: int, p: float, center: float | None) -> float:
    from shadowtap.report.sequences import _betaln

    a, b = (0.5, 0.5) if center is None else ((RHO - 1) * center, (RHO - 1) * (1 - center))
    evidence = _betaln(a + successes, b + n - successes) - _betaln(a, b)
    return evidence - successes * math.log(p) - (n - successes) * math.log1p(-p)


@pytest.mark.parametrize(
    ("successes", "n", "center"),
    [(0, 300, 0.02), (3, 300, 0.02), (45, 300, 0.05), (150, 300, None), (7, 40, None)],
)
def test_rate_bounds_match_a_brute_force_scan(successes: int, n: int, center: float | None) -> None:
    low_alpha, high_alpha = 0.001, 0.025
    interval = RateSequence(successes, n, low_alpha, high_alpha, center).interval()
    grid = [i / 20_000 for i in range(1, 20_000)]
    rate = successes / n
    kept_high = [
        p
        for p in grid
        if p >= rate and log_mixture(successes, n, p, center) < math.log(1 / high_alpha)
    ]
    kept_low = [
        p
        for p in grid
        if p <= rate and log_mixture(successes, n, p, center) < math.log(1 / low_alpha)
    ]
    assert interval.high == pytest.approx(max(kept_high), abs=1e-4)
    if successes:
        assert interval.low == pytest.approx(min(kept_low), abs=1e-4)
    else:
        assert interval.low == 0.0


def test_a_rare_event_rate_is_not_a_normal_approximation() -> None:
    # 0 errors in 300: the exact sequence still allows ~1.6% (the Wilson interval, valid at one
    # fixed n, allows 1.26%); a normal approximation would allow 0%.
    interval = RateSequence(0, 300, 0.025, 0.025, center=0.02).interval()
    assert interval.high is not None and 0.0126 < interval.high < 0.02
    assert stats.wilson(0, 300, 0.95).high == pytest.approx(0.01263, abs=1e-4)


def test_levels_split_the_errors_between_candidates_and_gates() -> None:
    levels = Levels.of(0.95, candidates=2, gates=4)
    assert levels.wrong_pass == pytest.approx(0.0125)  # 2.5% over two candidates
    assert levels.wrong_fail == pytest.approx(0.0125 / 4)  # and over four gates
    sliced = levels.split(10)
    assert sliced.wrong_pass == levels.wrong_pass and sliced.wrong_fail == levels.wrong_fail / 10


def test_gate_verdicts_follow_the_anytime_interval() -> None:
    passing = NormalSequence(0.0, 0.005, 400, 0.025, 0.025)
    failing = NormalSequence(0.2, 0.005, 400, 0.025, 0.025)
    straddling = NormalSequence(0.04, 0.01, 400, 0.025, 0.025)
    assert decide("agreement_drop", passing, 0.05, 400).verdict == "pass"
    assert decide("agreement_drop", failing, 0.05, 400).verdict == "fail"
    undecided = decide("agreement_drop", straddling, 0.05, 400)
    assert (undecided.verdict, undecided.reason) == ("insufficient", "undecided")
    assert undecided.more_pairs is not None
    # The projected interval clears the limit at 400 + more pairs, and not one pair earlier.
    after = straddling.at(400 + undecided.more_pairs)
    before = straddling.at(400 + undecided.more_pairs - 1)
    assert after.high is not None and before.high is not None
    assert after.high <= 0.05 < before.high
    # A normal sequence on too few pairs decides nothing, however far from the limit...
    tiny = decide("agreement_drop", NormalSequence(0.5, 0.01, 8, 0.025, 0.025), 0.05, 8)
    assert (tiny.verdict, tiny.reason) == ("insufficient", "too_few_pairs")
    assert tiny.more_pairs is not None and tiny.more_pairs >= 22
    # ...while a rate's exact sequence is honest at any n: 10 errors in 10 requests is a fail.
    errors = RateSequence(10, 10, 0.025, 0.025, center=0.02)
    assert decide("error_rate", errors, 0.02, 10).verdict == "fail"
    # A tie cannot be decided by more data.
    assert more_pairs_needed(NormalSequence(0.05, 0.01, 400, 0.025, 0.025), 0.05) is None


def test_more_pairs_for_a_rate_recomputes_the_sequence() -> None:
    no_errors = RateSequence(0, 120, 0.025, 0.025, center=0.02)
    gate = decide("error_rate", no_errors, 0.02, 120)
    assert gate.verdict == "insufficient" and gate.more_pairs is not None
    after = RateSequence(0, 120 + gate.more_pairs, 0.025, 0.025, center=0.02).interval()
    before = RateSequence(0, 119 + gate.more_pairs, 0.025, 0.025, center=0.02).interval()
    assert after.high is not None and before.high is not None
    assert after.high <= 0.02 < before.high


def test_overall_verdict() -> None:
    def rate(errors: int, n: int):  # type: ignore[no-untyped-def]
        return decide("error_rate", RateSequence(errors, n, 0.025, 0.025, 0.02), 0.02, n)

    ok, bad, unsure = rate(0, 800), rate(100, 500), rate(4, 250)
    assert overall([ok, ok]) == ("pass", None)
    assert overall([ok, bad, unsure]) == ("fail", None)
    verdict, more = overall([ok, unsure])
    assert verdict == "insufficient" and more == unsure.more_pairs and more
    assert overall([]) == ("insufficient", None)  # no gates: nothing shows the swap is safe


def test_a_rate_whose_end_is_next_to_0_or_1_is_found_not_walked_forever() -> None:
    """8 errors of 9 with the mass at 5%: the high end lies between the outward walk's last
    point (1 - 1e-10) and 1 - 1e-12. The walk used to stop moving there and spin for ever,
    hanging `shadowtap report` (the demo's once in a few runs). Run in a child with a time
    limit, so the old code fails the test rather than hanging the suite; then each end found
    is checked against its defining equation."""
    cases = [(8, 9, 0.05), (9, 10, 0.05), (399, 400, 0.3)]
    cases += [(s, n, 0.05) for n in range(2, 60) for s in range(n + 1)]
    code = (
        "import json, sys\n"
        "from shadowtap.report.sequences import RateSequence\n"
        "cases = json.loads(sys.argv[1])\n"
        "out = [RateSequence(s, n, 0.0025, 0.0025, c).interval() for s, n, c in cases]\n"
        "print(json.dumps([[i.low, i.high] for i in out]))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    target = math.log(1 / 0.0025)
    for (successes, n, center), (low, high) in zip(cases, json.loads(child.stdout), strict=True):
        for end in (low, high):
            # (within 1e-9 of 0 or 1, p itself holds too few digits to check the equation)
            if 1e-9 < end < 1 - 1e-9 and end != successes / n:
                value = log_mixture(successes, n, end, center)
                assert value == pytest.approx(target, rel=1e-6), (successes, n, end)
