"""Fixed-sample interval code against reference computations: textbook Wilson values, the
normal approximation where it is exact enough, coverage by simulation. (The anytime intervals
that decide the gates: tests/test_report_sequences.py.)"""

from __future__ import annotations

import math
import random
from statistics import NormalDist, fmean, stdev

import pytest
from shadowtap.report import stats

Z95 = NormalDist().inv_cdf(0.975)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion",
        # Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_the_textbook(successes: int, n: int, low: float, high: float) -> None:
    interval = stats.wilson(successes, n, 0.95)
    assert interval.estimate == pytest.approx(successes / n)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_wilson_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng, p, n, trials = random.Random(7), 0.03, 200, 2000
    covered = 0
    for _ in range(trials):
        interval = stats.wilson(sum(rng.random() < p for _ in range(n)), n, 0.95)
        assert interval.low is not None and interval.high is not None
        covered += interval.low <= p <= interval.high
    assert 0.93 <= covered / trials <= 0.975


def test_percentile_interpolates_like_numpy_default() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    # numpy.percentile(values, [50, 95, 99]) == [3.0, 8.8, 9.76]
    assert stats.percentile(values, 0.5) == 3.0
    assert stats.percentile(values, 0.95) == pytest.approx(8.8)
    assert stats.percentile(values, 0.99) == pytest.approx(9.76)
    assert stats.summary_percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_bootstrap_mean_agrees_with_the_normal_interval_on_a_large_sample() -> None:
    rng = random.Random(11)
    values = [rng.betavariate(2, 5) for _ in range(2000)]
    boot = stats.bootstrap_mean(values, 0.95, "large")
    half = Z95 * stdev(values) / math.sqrt(len(values))
    assert boot.method == "bootstrap"
    assert boot.estimate == pytest.approx(fmean(values))
    assert boot.low is not None and boot.high is not None
    assert boot.low == pytest.approx(fmean(values) - half, abs=0.15 * half)
    assert boot.high == pytest.approx(fmean(values) + half, abs=0.15 * half)


def test_bootstrap_mean_difference_agrees_with_the_normal_interval() -> None:
    rng = random.Random(12)
    a = [rng.betavariate(18, 2) for _ in range(1500)]
    b = [rng.betavariate(6, 4) for _ in range(900)]
    boot = stats.bootstrap_mean_difference(a, b, 0.95, "diff")
    centre = fmean(a) - fmean(b)
    half = Z95 * math.sqrt(stdev(a) ** 2 / len(a) + stdev(b) ** 2 / len(b))
    assert boot.estimate == pytest.approx(centre)
    assert boot.low == pytest.approx(centre - half, abs=0.15 * half)
    assert boot.high == pytest.approx(centre + half, abs=0.15 * half)


def test_bootstrap_mean_covers_the_true_mean() -> None:
    rng, trials, covered = random.Random(3), 120, 0
    true_mean = 2 / 7  # Beta(2, 5)
    for trial in range(trials):
        sample = [rng.betavariate(2, 5) for _ in range(60)]
        interval = stats.bootstrap_mean(sample, 0.95, f"coverage-{trial}")
        assert interval.low is not None and interval.high is not None
        covered += interval.low <= true_mean <= interval.high
    # 95% nominal; percentile intervals run a little short at n=60. 120 trials: sd ~2%.
    assert 0.86 <= covered / trials <= 1.0


def test_rare_disagreement_is_not_hidden_by_all_agreeing_samples() -> None:
    # Scores that disagree 4% of the time: 40 pairs are all 1.0 in ~20% of samples, where a
    # plain bootstrap returns [1, 1] and misses the true mean 0.96 every time.
    rng, trials, covered, all_agree = random.Random(8), 200, 0, 0
    for trial in range(trials):
        sample = [0.0 if rng.random() < 0.04 else 1.0 for _ in range(40)]
        all_agree += min(sample) == 1.0
        interval = stats.bootstrap_mean(sample, 0.95, f"rare-{trial}")
        assert interval.low is not None and interval.high is not None
        covered += interval.low <= 0.96 <= interval.high
    assert all_agree > 20  # the situation under test happened
    assert covered / trials >= 0.9
    drop = stats.bootstrap_mean_difference([1.0] * 43, [1.0] * 43, 0.95, "both agree")
    assert drop.estimate == 0 and drop.method == "wilson-bound"
    assert drop.high is not None and drop.high > 0.05  # 43 pairs cannot show a drop <= 5%


def test_bootstrap_is_reproducible_per_label() -> None:
    rng = random.Random(5)
    values = [rng.random() for _ in range(300)]
    first = stats.bootstrap_mean(values, 0.95, "same label")
    assert stats.bootstrap_mean(values, 0.95, "same label") == first
    assert stats.bootstrap_mean(values, 0.95, "other label") != first


def test_paired_bootstrap_keeps_pairs_together() -> None:
    rng = random.Random(9)
    primary = [rng.lognormvariate(math.log(800), 0.6) for _ in range(300)]
    doubled = [2 * p for p in primary]
    ratios = stats.bootstrap_quantile_ratios(doubled, primary, (0.5, 0.95), 0.95, "paired")
    # Every resample keeps each request's two latencies together, so every ratio is exactly 2;
    # an unpaired bootstrap would spread it (p95 of 300 lognormals varies by ~10%).
    for q in (0.5, 0.95):
        assert ratios[q].estimate == pytest.approx(2.0)
        assert ratios[q].low == pytest.approx(2.0)
        assert ratios[q].high == pytest.approx(2.0)
    cost = stats.bootstrap_paired(doubled, primary, stats.sum_ratio, 0.95, "cost")
    assert (cost.estimate, cost.low, cost.high) == pytest.approx((2.0, 2.0, 2.0))


def test_paired_quantile_ratio_interval_brackets_the_truth() -> None:
    rng = random.Random(21)
    primary = [rng.lognormvariate(math.log(800), 0.5) for _ in range(500)]
    candidate = [p * 1.3 * rng.lognormvariate(0, 0.2) for p in primary]
    ratio = stats.bootstrap_quantile_ratios(candidate, primary, (0.95,), 0.95, "truth")[0.95]
    assert ratio.low is not None and ratio.high is not None
    # p95 of (p * 1.3 * noise) over p95 of p: about 1.3 * exp(small), well inside [1.1, 1.7]
    assert 1.1 < ratio.low < ratio.estimate < ratio.high < 1.7  # type: ignore[operator]


def test_large_samples_resample_m_of_n_with_the_right_width() -> None:
    # Past RESAMPLE_AT_MOST pairs each resample draws fewer and rescales by sqrt(m / n):
    # quadrupling n must halve the interval, as it does for the full bootstrap.
    rng = random.Random(31)

    def sample(n: int) -> tuple[list[float], list[float]]:
        primary = [rng.lognormvariate(math.log(800), 0.5) for _ in range(n)]
        return [p * 1.3 * rng.lognormvariate(0, 0.2) for p in primary], primary

    small_n = stats.RESAMPLE_AT_MOST
    small = stats.bootstrap_quantile_ratios(*sample(small_n), (0.95,), 0.95, "s")[0.95]
    large = stats.bootstrap_quantile_ratios(*sample(4 * small_n), (0.95,), 0.95, "l")[0.95]
    assert (small.method, large.method) == ("bootstrap", "bootstrap-m-of-n")
    assert large.low is not None and large.high is not None
    assert small.low is not None and small.high is not None
    # log(candidate) ~ N(log 800 + log 1.3, 0.5^2 + 0.2^2): the true p95 ratio is
    truth = 1.3 * math.exp(NormalDist().inv_cdf(0.95) * (math.sqrt(0.29) - 0.5))
    assert large.low < truth < large.high
    assert 0.35 < (large.high - large.low) / (small.high - small.low) < 0.7


def test_mean_difference_with_one_huge_side() -> None:
    rng = random.Random(41)
    huge = [rng.betavariate(18, 2) for _ in range(50_000)]
    small = [rng.betavariate(6, 4) for _ in range(200)]
    drop = stats.bootstrap_mean_difference(huge, small, 0.95, "huge")
    half = Z95 * math.hypot(stdev(huge) / math.sqrt(50_000), stdev(small) / math.sqrt(200))
    assert drop.method == "bootstrap"
    assert drop.low == pytest.approx(fmean(huge) - fmean(small) - half, abs=0.15 * half)
    assert drop.high == pytest.approx(fmean(huge) - fmean(small) + half, abs=0.15 * half)


def test_degenerate_samples() -> None:
    assert stats.bootstrap_mean([], 0.95, "x") == stats.EMPTY
    single = stats.bootstrap_mean([0.5], 0.95, "x")
    assert single.estimate == 0.5 and not single.defined
    constant = stats.bootstrap_mean([0.5] * 50, 0.95, "x")
    assert (constant.low, constant.high, constant.method) == (0.5, 0.5, "exact")
    # All at the boundary: not certainty, but the Wilson bound of "0 of 50 under 1".
    agreeing = stats.bootstrap_mean([1.0] * 50, 0.95, "x")
    assert agreeing.method == "wilson-bound" and agreeing.high == 1.0
    assert agreeing.low == pytest.approx(1 - Z95**2 / (50 + Z95**2))
    zero = stats.bootstrap_quantile_ratios([1.0, 2.0], [0.0, 0.0], (0.5,), 0.95, "z")[0.5]
    assert zero.estimate is None
