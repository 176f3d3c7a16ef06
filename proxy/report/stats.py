"""Interval estimates for the report: bootstrap, Wilson, percentiles — pure Python, seeded.

numpy is not a dependency of shadowtap, and the report's samples are small enough (hundreds to
tens of thousands of pairs) that `random.choices` plus `sum`/`sorted` is fast enough when the
number of resamples is scaled to the sample size (`resamples_for`).

Every bootstrap takes a `label`; the generator is seeded from it, so the same data gives the same
report on every run and machine, and adding a statistic never shifts the others' intervals.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from statistics import NormalDist

# 1,000 resamples is the usual size for percentile intervals (Efron & Tibshirani): the end
# points' Monte-Carlo error is small beside the interval's width.
MAX_RESAMPLES = 1000
MIN_RESAMPLES = 400
# Draws per statistic before the number of resamples is cut: keeps one statistic well under
# a second in pure Python.
DRAW_BUDGET = 1_000_000
# Above this many values a mean's bootstrap interval equals the normal one to Monte-Carlo
# error, so the normal interval is used (and named in `Interval.method`).
NORMAL_MEAN_ABOVE = 5_000
# Above this many pairs a ratio's bootstrap draws this many per resample ("m out of n") and
# scales the spread by sqrt(m / n): quantiles and ratios of means converge at the 1/sqrt(n)
# rate, so the spread at m says what it is at n (Politis, Romano & Wolf, "Subsampling").
RESAMPLE_AT_MOST = 2_500


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with a confidence interval; `low`/`high` are None when n is too small."""

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    method: str  # "bootstrap", "normal", "wilson", "exact" (no spread) or "none" (no data)

    @property
    def defined(self) -> bool:
        return self.estimate is not None and self.low is not None and self.high is not None


EMPTY = Interval(None, None, None, 0, "none")


def z_for(confidence: float) -> float:
    """Two-sided normal quantile: 1.959964 for 0.95."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def rng_for(label: str) -> random.Random:
    """A generator seeded from a label (stable across runs and Python versions)."""
    return random.Random(int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big"))


def resamples_for(n: int) -> int:
    return max(MIN_RESAMPLES, min(MAX_RESAMPLES, DRAW_BUDGET // max(n, 1)))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default, DuckDB quantile_cont)."""
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    position = (len(sorted_values) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * weight


def _percentile_interval(
    replicates: list[float], estimate: float, n: int, confidence: float, drawn: int | None = None
) -> Interval:
    """Percentile interval; `drawn` < n marks an m-out-of-n bootstrap, whose spread around
    the estimate is scaled by sqrt(drawn / n)."""
    replicates.sort()
    alpha = (1 - confidence) / 2
    low, high = percentile(replicates, alpha), percentile(replicates, 1 - alpha)
    if low == high == estimate:
        return Interval(estimate, low, high, n, "exact")
    if drawn is not None and drawn < n:
        scale = math.sqrt(drawn / n)
        low, high = estimate + (low - estimate) * scale, estimate + (high - estimate) * scale
        return Interval(estimate, low, high, n, "bootstrap-m-of-n")
    return Interval(estimate, low, high, n, "bootstrap")


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); n >= 2."""
    centre = mean(values)
    variance = math.fsum((v - centre) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def normal_mean_interval(values: Sequence[float], confidence: float) -> Interval:
    centre, half = mean(values), z_for(confidence) * standard_error(values)
    return Interval(centre, centre - half, centre + half, len(values), "normal")


def boundary_interval(values: Sequence[float], confidence: float) -> Interval | None:
    """The interval of a mean of [0, 1] scores that are all 1 (or all 0), else None.

    Resampling such a sample only ever gives 1, a zero-width interval that claims certainty:
    43 agreeing pairs cannot rule out that 8% of pairs would disagree. A score under 1 is at
    most 1 short, so the mean's shortfall is at most the share of pairs under 1, and that
    share is bounded by the Wilson interval of 0 such pairs in n.
    """
    if not values or (values[0] not in (0.0, 1.0)) or any(v != values[0] for v in values):
        return None
    bound = wilson(0, len(values), confidence).high
    assert bound is not None
    if values[0] == 1.0:
        return Interval(1.0, 1.0 - bound, 1.0, len(values), "wilson-bound")
    return Interval(0.0, 0.0, bound, len(values), "wilson-bound")


def bootstrap_mean(values: Sequence[float], confidence: float, label: str) -> Interval:
    """Percentile-bootstrap interval of the mean of scores in [0, 1]."""
    n = len(values)
    if n == 0:
        return EMPTY
    estimate = mean(values)
    if n == 1:
        return Interval(estimate, None, None, 1, "none")
    boundary = boundary_interval(values, confidence)
    if boundary is not None:
        return boundary
    if n > NORMAL_MEAN_ABOVE:
        return normal_mean_interval(values, confidence)
    rng, population = rng_for(label), list(values)
    # Plain sum: summing n values in [0, 1] loses nothing that shows at 3 significant digits.
    replicates = [sum(rng.choices(population, k=n)) / n for _ in range(resamples_for(n))]
    return _percentile_interval(replicates, estimate, n, confidence)


def bootstrap_mean_difference(
    minuend: Sequence[float], subtrahend: Sequence[float], confidence: float, label: str
) -> Interval:
    """Interval of mean(minuend) - mean(subtrahend) for two independently drawn samples.

    Used for the agreement drop (noise floor - candidate): the secondary and a candidate are
    sampled at their own rates, so their requests overlap only partly and cannot be paired.
    Where they do overlap the two are positively correlated, which makes this interval wider
    than a paired one — erring towards `insufficient`, never towards a false verdict.
    """
    n, m = len(minuend), len(subtrahend)
    if n == 0 or m == 0:
        return EMPTY
    estimate = mean(minuend) - mean(subtrahend)
    if n == 1 or m == 1:
        return Interval(estimate, None, None, min(n, m), "none")
    if boundary_interval(minuend, confidence) or boundary_interval(subtrahend, confidence):
        # A side without spread: combine the two means' intervals, each at 1 - alpha/2
        # (Bonferroni), so that both hold together with the requested confidence.
        each = 1 - (1 - confidence) / 2
        a = bootstrap_mean(minuend, each, f"{label}:minuend")
        b = bootstrap_mean(subtrahend, each, f"{label}:subtrahend")
        if a.low is None or a.high is None or b.low is None or b.high is None:
            return Interval(estimate, None, None, min(n, m), "none")
        return Interval(estimate, a.low - b.high, a.high - b.low, min(n, m), "wilson-bound")
    if min(n, m) > NORMAL_MEAN_ABOVE:  # Welch's normal interval, as for a single mean
        half = z_for(confidence) * math.hypot(standard_error(minuend), standard_error(subtrahend))
        return Interval(estimate, estimate - half, estimate + half, min(n, m), "normal")
    rng = rng_for(label)
    first, second = _replicate_mean(minuend, rng), _replicate_mean(subtrahend, rng)
    small = min(n, NORMAL_MEAN_ABOVE) + min(m, NORMAL_MEAN_ABOVE)
    replicates = [first() - second() for _ in range(resamples_for(small))]
    return _percentile_interval(replicates, estimate, min(n, m), confidence)


def _replicate_mean(values: Sequence[float], rng: random.Random) -> Callable[[], float]:
    """One bootstrap replicate of the mean per call. A large side draws from the normal
    distribution its bootstrap converges to, so a huge sample beside a small one costs
    nothing while the small one is still resampled properly."""
    n, population = len(values), list(values)
    if n > NORMAL_MEAN_ABOVE:
        centre, error = mean(values), standard_error(values)
        return lambda: rng.gauss(centre, error)
    return lambda: sum(rng.choices(population, k=n)) / n


PairStatistic = Callable[[Sequence[float], Sequence[float]], float]


def quantile_ratio(q: float) -> PairStatistic:
    """Statistic for a paired bootstrap: quantile q of the candidate over that of the primary."""

    def statistic(candidate: Sequence[float], primary: Sequence[float]) -> float:
        return percentile(sorted(candidate), q) / percentile(sorted(primary), q)

    return statistic


def sum_ratio(candidate: Sequence[float], primary: Sequence[float]) -> float:
    """Ratio of totals (= ratio of means on the same requests): cost per request."""
    return sum(candidate) / sum(primary)


def bootstrap_paired(
    candidate: Sequence[float],
    primary: Sequence[float],
    statistic: PairStatistic,
    confidence: float,
    label: str,
) -> Interval:
    """Paired bootstrap: resample whole requests, so candidate and primary move together.

    Pairing removes the request-to-request variation both share (long prompts are slow for
    every model), which is what makes a ratio on the same requests far tighter than one
    between two unrelated samples.
    """
    if len(candidate) != len(primary):
        raise ValueError("paired samples must have the same length")
    n = len(candidate)
    if n == 0:
        return EMPTY
    try:
        estimate = statistic(candidate, primary)
    except ZeroDivisionError:
        return Interval(None, None, None, n, "none")
    if n == 1:
        return Interval(estimate, None, None, 1, "none")
    rng, indices, drawn = rng_for(label), range(n), min(n, RESAMPLE_AT_MOST)
    replicates: list[float] = []
    for _ in range(resamples_for(drawn)):
        gather = itemgetter(*rng.choices(indices, k=drawn))  # C-level gather of both sides
        try:
            replicates.append(statistic(gather(candidate), gather(primary)))
        except ZeroDivisionError:
            continue  # a resample of all-zero primaries: no ratio exists for it
    if len(replicates) < MIN_RESAMPLES // 2:
        return Interval(estimate, None, None, n, "none")
    return _percentile_interval(replicates, estimate, n, confidence, drawn)


def bootstrap_quantile_ratios(
    candidate: Sequence[float],
    primary: Sequence[float],
    quantiles: Sequence[float],
    confidence: float,
    label: str,
) -> dict[float, Interval]:
    """Paired bootstrap of quantile(candidate) / quantile(primary) for several quantiles.

    One resample serves every quantile (sorting is the expensive part), so p50 and p95 ratios
    cost hardly more than one.
    """
    if len(candidate) != len(primary):
        raise ValueError("paired samples must have the same length")
    n = len(candidate)
    none = {q: Interval(None, None, None, n, "none") for q in quantiles}
    if n == 0:
        return {q: EMPTY for q in quantiles}

    def ratios(c: list[float], p: list[float]) -> dict[float, float | None]:
        c.sort()
        p.sort()
        out: dict[float, float | None] = {}
        for q in quantiles:
            denominator = percentile(p, q)
            out[q] = percentile(c, q) / denominator if denominator > 0 else None
        return out

    estimates = ratios(list(candidate), list(primary))
    if n == 1:
        return {q: Interval(estimates[q], None, None, 1, "none") for q in quantiles}
    rng, indices, drawn = rng_for(label), range(n), min(n, RESAMPLE_AT_MOST)
    replicates: dict[float, list[float]] = {q: [] for q in quantiles}
    for _ in range(resamples_for(drawn)):
        gather = itemgetter(*rng.choices(indices, k=drawn))
        for q, value in ratios(list(gather(candidate)), list(gather(primary))).items():
            if value is not None:
                replicates[q].append(value)
    result = dict(none)
    for q in quantiles:
        estimate = estimates[q]
        if estimate is not None and len(replicates[q]) >= MIN_RESAMPLES // 2:
            result[q] = _percentile_interval(replicates[q], estimate, n, confidence, drawn)
        else:
            result[q] = Interval(estimate, None, None, n, "none")
    return result


def wilson(successes: float, n: int, confidence: float) -> Interval:
    """Wilson score interval for a proportion — sound at 0 and n, unlike the Wald interval."""
    if n == 0:
        return EMPTY
    z = z_for(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n, "wilson")


def summary_percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 of a sample (None when empty)."""
    ordered = sorted(values)
    return {
        name: (percentile(ordered, q) if ordered else None)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
    }
