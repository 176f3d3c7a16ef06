"""Daily peeking, simulated: the gates' verdicts stay safe when the report is re-run after
every batch of pairs and the first `pass` is acted on.

Each simulated run feeds one candidate's pairs in batches of 50 up to 5,000 and asks the gate
after every batch, through the report's own decision code (`difference_sequence` /
`RateSequence` and `decide`, from the sufficient statistics `build_report` gives them). A
candidate *truly just over* a limit must be passed in at most 5% of runs; a truly good one
must still pass, within the sample sizes asserted (and quoted in README "Gates"). The same
runs under the old fixed-sample rule (a 95% interval at every look) pass the bad candidate
far more often: that control shows the simulation can see the problem at all.

numpy generates the data (a few hundred runs of 5,000 draws, seeded) and its running sums; the
decisions themselves are the report's scalar code, ~30,000 calls per scenario.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from shadowtap.report import stats
from shadowtap.report.gates import Levels, decide
from shadowtap.report.sequences import Moments, RateSequence, difference_sequence

RUNS = 300
STEP, MAX_PAIRS = 50, 5_000
LOOKS = np.arange(STEP, MAX_PAIRS + 1, STEP)
CONFIDENCE = 0.95
# One candidate, one gate: the levels `build_report` would use for it.
LEVELS = Levels.of(CONFIDENCE, candidates=1, gates=1)
DROP_LIMIT, ERROR_LIMIT = 0.05, 0.02
NOISE_MEAN = 0.9  # the secondary's agreement: Beta(18, 2), like a same-model replay


def beta_scores(rng: np.random.Generator, mean: float) -> np.ndarray:
    """RUNS x MAX_PAIRS agreement scores in [0, 1] with the noise floor's spread."""
    return rng.beta(20 * mean, 20 * (1 - mean), size=(RUNS, MAX_PAIRS))


def moments_at_looks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sum of squared deviations of each run's first n scores, at every look."""
    totals = np.cumsum(scores, axis=1)[:, LOOKS - 1]
    squares = np.cumsum(scores * scores, axis=1)[:, LOOKS - 1]
    means = totals / LOOKS
    return means, np.maximum(squares - LOOKS * means * means, 0.0)


def first_pass(passed: np.ndarray) -> np.ndarray:
    """Pairs at each run's first passing look (0: never passed)."""
    return np.where(passed.any(axis=1), LOOKS[passed.argmax(axis=1)], 0)


def agreement_passes(drop: float, seed: int, rule: str = "anytime") -> np.ndarray:
    """RUNS x looks: did the agreement gate pass a candidate whose true drop is `drop`?"""
    rng = np.random.default_rng(seed)
    noise_mean, noise_m2 = moments_at_looks(beta_scores(rng, NOISE_MEAN))
    mean, m2 = moments_at_looks(beta_scores(rng, NOISE_MEAN - drop))
    z = stats.z_for(CONFIDENCE)
    passed = np.zeros((RUNS, len(LOOKS)), dtype=bool)
    for run in range(RUNS):
        for look, n in enumerate(LOOKS.tolist()):
            floor = Moments(n, noise_mean[run, look], noise_m2[run, look])
            sample = Moments(n, mean[run, look], m2[run, look])
            if rule == "anytime":
                sequence = difference_sequence(floor, sample, LEVELS.wrong_fail, LEVELS.wrong_pass)
                verdict = decide("agreement_drop", sequence, DROP_LIMIT, n, plan=False).verdict
                passed[run, look] = verdict == "pass"
                if verdict == "pass":
                    break  # the team acts on the first pass
            else:
                # The old rule: a fixed-sample 95% interval (the normal one, which the
                # bootstrap matches at these sizes) must lie under the limit.
                error = math.hypot(
                    math.sqrt(floor.m2 / (n - 1) / n), math.sqrt(sample.m2 / (n - 1) / n)
                )
                passed[run, look] = floor.mean - sample.mean + z * error <= DROP_LIMIT
    return passed


def error_passes(rate: float, seed: int, rule: str = "anytime") -> np.ndarray:
    """RUNS x looks: did the error-rate gate pass a candidate erring at `rate`?"""
    rng = np.random.default_rng(seed)
    errors = np.cumsum(rng.random((RUNS, MAX_PAIRS)) < rate, axis=1)[:, LOOKS - 1]
    passed = np.zeros((RUNS, len(LOOKS)), dtype=bool)
    for run in range(RUNS):
        for look, n in enumerate(LOOKS.tolist()):
            count = int(errors[run, look])
            if rule == "anytime":
                sequence = RateSequence(
                    count, n, LEVELS.wrong_fail, LEVELS.wrong_pass, center=ERROR_LIMIT
                )
                verdict = decide("error_rate", sequence, ERROR_LIMIT, n, plan=False).verdict
            else:  # the old rule: the Wilson interval at every look
                high = stats.wilson(count, n, CONFIDENCE).high
                verdict = "pass" if high is not None and high <= ERROR_LIMIT else "open"
            passed[run, look] = verdict == "pass"
            if verdict == "pass":
                break
    return passed


def test_a_candidate_just_over_the_drop_limit_is_rarely_passed_by_daily_peeking() -> None:
    just_over = DROP_LIMIT + 0.001
    wrong = agreement_passes(just_over, seed=11).any(axis=1).mean()
    assert wrong <= 0.05, f"{wrong:.1%} of runs passed a candidate over the limit"
    # The fixed-sample rule, looked at after every batch, passes it far more often (~8-10%).
    fixed = agreement_passes(just_over, seed=11, rule="fixed").any(axis=1).mean()
    assert fixed > 0.05 and fixed > 3 * wrong, (fixed, wrong)


def test_a_candidate_just_over_the_error_limit_is_rarely_passed_by_daily_peeking() -> None:
    just_over = ERROR_LIMIT + 0.0005
    wrong = error_passes(just_over, seed=21).any(axis=1).mean()
    assert wrong <= 0.05, f"{wrong:.1%} of runs passed a candidate over the limit"
    # The Wilson interval at every look passes it in ~8% of runs.
    fixed = error_passes(just_over, seed=21, rule="fixed").any(axis=1).mean()
    assert fixed > 0.05 and fixed > 3 * wrong, (fixed, wrong)


@pytest.mark.parametrize(
    ("drop", "within"),
    [(0.0, 200), (DROP_LIMIT / 2, 600)],  # as quoted in README "Gates"
)
def test_a_good_candidate_still_passes_the_drop_gate(drop: float, within: int) -> None:
    passed_at = first_pass(agreement_passes(drop, seed=13))
    assert (passed_at > 0).all(), "every run of a good candidate passes by 5,000 pairs"
    assert np.percentile(passed_at, 95) <= within, np.percentile(passed_at, [50, 95])


@pytest.mark.parametrize(("rate", "within"), [(0.0, 300), (0.005, 1_500)])
def test_a_good_candidate_still_passes_the_error_gate(rate: float, within: int) -> None:
    passed_at = first_pass(error_passes(rate, seed=14))
    assert (passed_at > 0).all()
    assert np.percentile(passed_at, 95) <= within, np.percentile(passed_at, [50, 95])
