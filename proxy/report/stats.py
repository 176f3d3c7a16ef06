"""Interval estimates for the report: bootstrap, Wilson, percentiles — seeded.

Samples arrive as numpy arrays (a column of the selected pairs, never a Python object per
pair). Up to `EXACT_UP_TO` values they are summed as Python floats (`math.fsum`), as the report
always did; above, numpy's pairwise sums are used (relative error ~1e-16 x log n, far below
what a report shows). A bootstrap draws its indices with Python's `random` seeded from the
label, whatever the sample's size, and gathers them from the arrays: the draws, and so the
intervals, are those of the pure-Python report. Resampling stays bounded at fleet size: a mean
above `NORMAL_MEAN_ABOVE` values uses its normal interval, and a ratio draws `RESAMPLE_AT_MOST`
pairs per resample (m out of n), so 10 million pairs cost what 2,500 do.

Every bootstrap takes a `label`; the generator is seeded from it, so the same data gives the same
report on every run and machine, and adding a statistic never shifts the others' intervals.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

# A sample: a numpy column of the report's pairs, or Python floats (tests, small samples).
Sample = Sequence[float] | np.ndarray

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
# Samples up to this size are summed exactly in Python (as before numpy); larger ones by numpy.
EXACT_UP_TO = 100_000


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


def percentile(sorted_values: Sample, q: float) -> float:
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


def _large(values: Sample) -> bool:
    return isinstance(values, np.ndarray) and len(values) > EXACT_UP_TO


def small_list(values: Sample) -> list[float]:
    """A sample as Python floats (for the exact, pure-Python paths of small samples)."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def mean(values: Sample) -> float:
    if _large(values):
        return float(np.sum(values)) / len(values)
    return math.fsum(values) / len(values)


def standard_error(values: Sample) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); n >= 2."""
    centre = mean(values)
    if _large(values):
        squares = float(np.sum((np.asarray(values) - centre) ** 2))
    else:
        squares = math.fsum((v - centre) ** 2 for v in values)
    return math.sqrt(squares / (len(values) - 1) / len(values))


def normal_mean_interval(values: Sample, confidence: float) -> Interval:
    centre, half = mean(values), z_for(confidence) * standard_error(values)
    return Interval(centre, centre - half, centre + half, len(values), "normal")


def boundary_interval(values: Sample, confidence: float) -> Interval | None:
    """The interval of a mean of [0, 1] scores that are all 1 (or all 0), else None.

    Resampling such a sample only ever gives 1, a zero-width interval that claims certainty:
    43 agreeing pairs cannot rule out that 8% of pairs would disagree. A score under 1 is at
    most 1 short, so the mean's shortfall is at most the share of pairs under 1, and that
    share is bounded by the Wilson interval of 0 such pairs in n.
    """
    if len(values) == 0 or values[0] not in (0.0, 1.0):
        return None
    if isinstance(values, np.ndarray):
        if not bool(np.all(values == values[0])):
            return None
    elif any(v != values[0] for v in values):
        return None
    bound = wilson(0, len(values), confidence).high
    assert bound is not None
    if values[0] == 1.0:
        return Interval(1.0, 1.0 - bound, 1.0, len(values), "wilson-bound")
    return Interval(0.0, 0.0, bound, len(values), "wilson-bound")


def bootstrap_mean(values: Sample, confidence: float, label: str) -> Interval:
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
    rng, population = rng_for(label), small_list(values)
    # Plain sum: summing n values in [0, 1] loses nothing that shows at 3 significant digits.
    replicates = [sum(rng.choices(population, k=n)) / n for _ in range(resamples_for(n))]
    return _percentile_interval(replicates, estimate, n, confidence)


def bootstrap_mean_difference(
    minuend: Sample, subtrahend: Sample, confidence: float, label: str
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


def _replicate_mean(values: Sample, rng: random.Random) -> Callable[[], float]:
    """One bootstrap replicate of the mean per call. A large side draws from the normal
    distribution its bootstrap converges to, so a huge sample beside a small one costs
    nothing while the small one is still resampled properly."""
    n = len(values)
    if n > NORMAL_MEAN_ABOVE:
        centre, error = mean(values), standard_error(values)
        return lambda: rng.gauss(centre, error)
    population = small_list(values)
    return lambda: sum(rng.choices(population, k=n)) / n


PairStatistic = Callable[[Any, Any], float]


def percentiles_of(values: Sample, quantiles: Sample) -> list[float]:
    """`percentile(sorted(values), q)` for each q, by selecting only the order statistics each
    needs (np.partition): the same values as a full sort, in linear time."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    if n == 0:
        raise ValueError("percentile of an empty sample")
    spots = []
    for q in quantiles:
        position = (n - 1) * q
        lower = math.floor(position)
        spots.append((lower, min(lower + 1, n - 1), position - lower))
    chosen = np.partition(data, sorted({i for lower, upper, _ in spots for i in (lower, upper)}))
    out = []
    for lower, upper, weight in spots:
        low, high = float(chosen[lower]), float(chosen[upper])
        out.append(low + (high - low) * weight)
    return out


def quantile_ratio(q: float) -> PairStatistic:
    """Statistic for a paired bootstrap: quantile q of the candidate over that of the primary."""

    def statistic(candidate: Any, primary: Any) -> float:
        return percentiles_of(candidate, (q,))[0] / percentiles_of(primary, (q,))[0]

    return statistic


def _total(values: Any) -> float:
    """A sum as the pure-Python report made it (left to right) up to EXACT_UP_TO values."""
    return float(np.sum(values)) if _large(values) else sum(small_list(values))


def sum_ratio(candidate: Any, primary: Any) -> float:
    """Ratio of totals (= ratio of means on the same requests): cost per request."""
    return _total(candidate) / _total(primary)


def _draws(rng: random.Random, n: int, drawn: int) -> np.ndarray:
    """One resample's indices: Python's seeded `random.choices`, so every sample size draws
    exactly what the pure-Python report drew."""
    return np.fromiter(rng.choices(range(n), k=drawn), dtype=np.intp, count=drawn)


def bootstrap_paired(
    candidate: Sample,
    primary: Sample,
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
    first, second = np.asarray(candidate, dtype=float), np.asarray(primary, dtype=float)
    try:
        estimate = statistic(first, second)
    except ZeroDivisionError:
        return Interval(None, None, None, n, "none")
    if n == 1:
        return Interval(estimate, None, None, 1, "none")
    rng, drawn = rng_for(label), min(n, RESAMPLE_AT_MOST)
    replicates: list[float] = []
    for _ in range(resamples_for(drawn)):
        chosen = _draws(rng, n, drawn)
        try:
            replicates.append(statistic(first[chosen], second[chosen]))
        except ZeroDivisionError:
            continue  # a resample of all-zero primaries: no ratio exists for it
    if len(replicates) < MIN_RESAMPLES // 2:
        return Interval(estimate, None, None, n, "none")
    return _percentile_interval(replicates, estimate, n, confidence, drawn)


def bootstrap_quantile_ratios(
    candidate: Sample,
    primary: Sample,
    quantiles: Sample,
    confidence: float,
    label: str,
) -> dict[float, Interval]:
    """Paired bootstrap of quantile(candidate) / quantile(primary) for several quantiles.

    One resample serves every quantile (sorting is the expensive part), so p50 and p95 ratios
    cost hardly more than one. The estimate on the whole sample selects its order statistics
    instead of sorting (10 million latencies in well under a second).
    """
    if len(candidate) != len(primary):
        raise ValueError("paired samples must have the same length")
    n = len(candidate)
    none = {q: Interval(None, None, None, n, "none") for q in quantiles}
    if n == 0:
        return {q: EMPTY for q in quantiles}

    def ratios(c: np.ndarray, p: np.ndarray) -> dict[float, float | None]:
        tops, bottoms = percentiles_of(c, quantiles), percentiles_of(p, quantiles)
        return {
            q: top / bottom if bottom > 0 else None
            for q, top, bottom in zip(quantiles, tops, bottoms, strict=True)
        }

    first, second = np.asarray(candidate, dtype=float), np.asarray(primary, dtype=float)
    estimates = ratios(first, second)
    if n == 1:
        return {q: Interval(estimates[q], None, None, 1, "none") for q in quantiles}
    rng, drawn = rng_for(label), min(n, RESAMPLE_AT_MOST)
    replicates: dict[float, list[float]] = {q: [] for q in quantiles}
    for _ in range(resamples_for(drawn)):
        chosen = _draws(rng, n, drawn)
        for q, value in ratios(first[chosen], second[chosen]).items():
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


def summary_percentiles(values: Sample) -> dict[str, float | None]:
    """p50/p95/p99 of a sample (None when empty)."""
    names = ("p50", "p95", "p99")
    if len(values) == 0:
        return dict.fromkeys(names)
    return dict(zip(names, percentiles_of(values, (0.5, 0.95, 0.99)), strict=True))
