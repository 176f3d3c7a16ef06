"""Anytime-valid confidence sequences: intervals that hold at every sample size at once.

A fixed-sample 95% interval is wrong 5% of the time *at a sample size chosen in advance*. Teams
re-run the report every day and act on the first `pass`: that checks the interval at many
sample sizes, and the chance that one of those looks is wrong grows with every look (a
candidate just over a limit, checked every 50 pairs up to 5,000, passes a fixed-sample gate in
about 8-10% of runs; tests/test_report_peeking.py). A confidence sequence covers the true value
at every n simultaneously (Ville's inequality for a nonnegative (super)martingale), so stopping
the first day a candidate passes is as safe as fixing the sample size first.

Two constructions, each depending on the data only through counts and sums (so a verdict
never depends on the order rows were read in):

- `NormalSequence` — means, differences of means and log ratios. The one-sided normal-mixture
  boundary of Robbins (1970) as given by Howard, Ramdas, McAuliffe & Sekhon (2021,
  "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2)),
  applied in the estimate's information time with the standard error estimated from the
  data: the asymptotic confidence sequence of Waudby-Smith, Arnold, Wu, Howard & Ramdas
  (2024, "Time-uniform central limit theory and asymptotic confidence sequences"), the same
  boundary as the mixture SPRT of Johari, Pekelis & Walsh ("Always valid inference", 2017).
- `RateSequence` — shares of 0/1 outcomes (errors, invalid answers). Robbins' beta-binomial
  conjugate mixture (Howard et al. 2021, section 3): exact at any n, with no normal
  approximation, which matters for rare events near 0.

Both mixtures are tuned to be tightest around `TUNED_FOR_PAIRS` pairs; the price of validity
at every n is an interval ~1.5x as wide as the fixed-sample one there (x3.0 the standard error
instead of x1.96 at one-sided 2.5%).

Example: `NormalSequence(0.02, 0.01, 400, 0.025, 0.025).interval()` ->
`Interval(0.02, -0.0106, 0.0506, 400, "anytime-normal")`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from shadowtap.report.stats import EXACT_UP_TO, Interval, Sample

TUNED_FOR_PAIRS = 500
_STANDARD = NormalDist()


def _rho(pairs: float, alpha: float = 0.025) -> float:
    """The mixture's precision (in pairs) that minimises the boundary at `pairs` (Howard et
    al. 2021, eq. (3.5)'s approximation for the two-sided normal mixture)."""
    log_term = 2 * math.log(1 / alpha)
    return pairs / (log_term + math.log(1 + log_term))


RHO = _rho(TUNED_FOR_PAIRS)


@lru_cache(maxsize=65536)
def normal_multiplier(n: float, alpha: float) -> float:
    """How many standard errors the one-sided boundary at level `alpha` lies from the estimate
    after `n` pairs: u / sqrt(n), where u solves

        2 sqrt(rho / (n + rho)) exp(u^2 / (2 (n + rho))) Phi(u / sqrt(n + rho)) = 1 / alpha,

    the one-sided normal mixture (a half-normal mixing distribution of precision rho) reaching
    1 / alpha. Newton's method on the log of the left side, which is increasing and convex in
    u, from the closed form it has with Phi = 1 (a lower bound of the root): the first step
    lands right of the root and the rest approach it from there, monotonically.
    """
    if n <= 0:
        return math.inf
    variance = n + RHO
    spread = math.sqrt(variance)
    offset = math.log(2) + 0.5 * math.log(RHO / variance) - math.log(1 / alpha)
    u = math.sqrt(variance * (math.log(variance / RHO) + 2 * math.log(1 / (2 * alpha))))
    for _ in range(50):
        tail = _STANDARD.cdf(u / spread)
        value = offset + u * u / (2 * variance) + math.log(tail)
        slope = u / variance + _STANDARD.pdf(u / spread) / (spread * tail)
        step = value / slope
        u -= step
        if abs(step) <= 1e-13 * u:
            break
    return u / math.sqrt(n)


@dataclass(frozen=True, slots=True)
class Moments:
    """Sufficient statistics of a sample of scores in [0, 1]: count, mean, sum of squared
    deviations. `variance` adds one pseudo-observation of the largest possible variance (1/4),
    as in Waudby-Smith & Ramdas's plug-in estimator, so a sample that happens to agree on every
    pair never claims a zero-width interval."""

    n: int
    mean: float
    m2: float

    @classmethod
    def of(cls, values: Sample) -> Moments:
        n = len(values)
        if n == 0:
            return cls(0, math.nan, 0.0)
        if isinstance(values, np.ndarray) and n > EXACT_UP_TO:
            centre = float(np.sum(values)) / n
            return cls(n, centre, float(np.sum((values - centre) ** 2)))
        centre = math.fsum(values) / n
        return cls(n, centre, math.fsum((v - centre) ** 2 for v in values))

    @classmethod
    def of_sums(cls, n: int, mean: float | None, variance: float | None) -> Moments:
        """From SQL aggregates: count, avg and var_pop (m2 = n var_pop)."""
        if n == 0 or mean is None:
            return cls(0, math.nan, 0.0)
        return cls(n, float(mean), float(variance or 0.0) * n)

    @property
    def variance(self) -> float:
        return (self.m2 + 0.25) / (self.n + 1)

    @property
    def standard_error(self) -> float:
        return math.sqrt(self.variance / self.n) if self.n else math.inf


@dataclass(frozen=True, slots=True)
class NormalSequence:
    """An asymptotically normal estimate whose standard error shrinks as 1/sqrt(n).

    `low_alpha` / `high_alpha` are the one-sided error levels of each end (a gate's `high` end
    decides a pass, its `low` end a fail, and the two are corrected differently for
    multiplicity; see `shadowtap.report.gates.Levels`). `log = True`: the estimate and its
    standard error are on the log scale (ratios), and the interval is returned exponentiated.
    """

    estimate: float
    standard_error: float
    n: int
    low_alpha: float
    high_alpha: float
    log: bool = False

    def interval(self) -> Interval:
        return self.at(self.n)

    def at(self, n: int) -> Interval:
        """The interval after `n` pairs if the estimate stayed where it is (for `more_pairs`)."""
        if self.n <= 0 or n <= 0 or not math.isfinite(self.estimate):
            return Interval(None, None, None, max(n, 0), "none")
        error = self.standard_error * math.sqrt(self.n / n)
        low = self.estimate - error * normal_multiplier(n, self.low_alpha)
        high = self.estimate + error * normal_multiplier(n, self.high_alpha)
        if self.log:
            return Interval(
                math.exp(self.estimate), math.exp(low), math.exp(high), n, "anytime-normal"
            )
        return Interval(self.estimate, low, high, n, "anytime-normal")


def mean_sequence(sample: Moments, low_alpha: float, high_alpha: float) -> NormalSequence:
    return NormalSequence(sample.mean, sample.standard_error, sample.n, low_alpha, high_alpha)


def difference_sequence(
    minuend: Moments, subtrahend: Moments, low_alpha: float, high_alpha: float
) -> NormalSequence:
    """mean(minuend) - mean(subtrahend) of two independently sampled streams (the noise floor
    and a candidate, sampled at their own rates). It rests on the smaller sample: n is
    min(n1, n2), the count `min_pairs` applies to."""
    error = math.hypot(minuend.standard_error, subtrahend.standard_error)
    n = min(minuend.n, subtrahend.n)
    return NormalSequence(minuend.mean - subtrahend.mean, error, n, low_alpha, high_alpha)


def _betaln(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


@dataclass(frozen=True, slots=True)
class RateSequence:
    """`successes` of `n` 0/1 outcomes (e.g. errors of n requests).

    The confidence set after n outcomes is {p : M_n(p) < 1 / alpha}, with the mixture
    martingale M_n(p) = B(a + S, b + n - S) / B(a, b) / (p^S (1 - p)^(n - S)) for a fixed
    Beta(a, b) mixing distribution; -log M_n is concave in p, so each end is one bisection.
    `center` (a gate's limit) puts the mixture's mass where decisions are made: Beta(r c,
    r (1 - c)) with r = rho - 1 pairs; None gives Jeffreys' Beta(1/2, 1/2).
    """

    successes: float
    n: int
    low_alpha: float
    high_alpha: float
    center: float | None = None

    def interval(self) -> Interval:
        return self._bounds(self.successes, self.n)

    def at(self, n: int) -> Interval:
        """The interval after `n` outcomes at today's rate (for `more_pairs`)."""
        rate = self.successes / self.n if self.n else 0.0
        return self._bounds(rate * n, n)

    def _bounds(self, successes: float, n: int) -> Interval:
        if n <= 0:
            return Interval(None, None, None, 0, "none")
        if self.center is None or not 0 < self.center < 1:
            a = b = 0.5
        else:
            strength = max(RHO - 1, 1.0)
            a, b = strength * self.center, strength * (1 - self.center)
        failures = n - successes
        evidence = _betaln(a + successes, b + failures) - _betaln(a, b)
        rate = successes / n

        def excess(p: float) -> tuple[float, float]:
            """log M(p) - log(1 / alpha) before the threshold, and its slope in p."""
            hits = successes * math.log(p) if successes else 0.0
            misses = failures * math.log1p(-p) if failures else 0.0
            return evidence - hits - misses, failures / (1 - p) - successes / p

        def end(alpha: float, side: float) -> float:
            """The confidence set's end on `side` (+1 above the rate, -1 below): where log M
            reaches log(1 / alpha). log M is convex with its minimum (<= 0) at the rate, so
            from a point beyond the end Newton's steps approach it monotonically."""
            target = math.log(1 / alpha)
            limit = 1 - 1e-12 if side > 0 else 1e-12
            if excess(limit)[0] < target:
                return limit  # even the far end is not rejected
            gap = max(rate if side < 0 else 1 - rate, 1e-12)
            widest = gap * (1 - 1e-9)  # the walk's last point short of 0 or 1
            step = min(gap / 2, 1 / n)
            p = rate + side * step
            while excess(p)[0] < target:  # walk out until past the end
                if step >= widest:
                    # The end lies between the walk's last point and `limit` (e.g. 8 errors
                    # of 9 near 1): start from `limit`, past it (checked above). Walking on
                    # would never move again.
                    p = limit
                    break
                step = min(2 * step, widest)
                p = rate + side * step
            for _ in range(100):
                value, slope = excess(p)
                move = (value - target) / slope
                p -= move
                if abs(move) <= 1e-13 * max(p, 1e-300):
                    break
            return p

        low = 0.0 if rate <= 0 else end(self.low_alpha, -1.0)
        high = 1.0 if rate >= 1 else end(self.high_alpha, 1.0)
        return Interval(rate, max(0.0, low), min(1.0, high), n, "anytime-beta-binomial")
