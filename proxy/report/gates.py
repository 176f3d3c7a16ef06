"""Turning confidence sequences into verdicts: a gate passes or fails only when its anytime
interval (`shadowtap.report.sequences`) clears the limit.

Every gate has the form "value <= limit":

- `pass` when the interval's high end is at or under the limit,
- `fail` when its low end is over the limit,
- `insufficient` otherwise — the data cannot yet tell, or there is no evidence at all — with
  its `reason` and, where more data would help, an estimate of how many more pairs would
  decide it. No evidence is never a pass.

The two ends carry their own error levels (`Levels`), so the report controls, across every
gate and every candidate it shows and at every sample size (re-running it daily is fine):

- a wrong `pass` (a candidate passes while one of its gates is truly over its limit) at
  (1 - confidence) / 2 in all: each gate's high end is at (1 - confidence) / 2 / K for K
  candidates. A candidate passes only when *every* gate passes (an intersection-union test),
  so its gates need no correction among themselves;
- a wrong `fail` (a candidate fails while all its gates are truly within their limits) at
  (1 - confidence) / 2 in all: each gate's low end is at (1 - confidence) / 2 / (K x T) for
  T gates of that candidate (Bonferroni), a gate made of several tests (slices) splitting its
  share once more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shadowtap.report.model import GateResult, Reason, Verdict
from shadowtap.report.sequences import NormalSequence, RateSequence
from shadowtap.report.stats import Interval

# The normal-mixture sequences rest on a central limit theorem, which needs some pairs: gates
# built on them wait for this many. A rate's beta-binomial sequence is exact and does not wait.
MIN_PAIRS = 30
# `more_pairs` looks this far ahead at most; beyond it a gate is as good as a tie.
HORIZON = 10**9

Sequence = NormalSequence | RateSequence


@dataclass(frozen=True, slots=True)
class Levels:
    """One-sided error levels of a gate's interval: its high end (a wrong pass) and its low
    end (a wrong fail).

    Example: `Levels.of(0.95, candidates=2, gates=4)` -> `Levels(0.0125, 0.003125)`.
    """

    wrong_pass: float
    wrong_fail: float

    @classmethod
    def of(cls, confidence: float, candidates: int, gates: int) -> Levels:
        half = (1 - confidence) / 2
        per_candidate = half / max(candidates, 1)
        return cls(per_candidate, per_candidate / max(gates, 1))

    def split(self, tests: int) -> Levels:
        """Levels for each of `tests` tests that make up one gate: every test must pass for
        the gate to pass (no correction), any test failing fails it (Bonferroni)."""
        return Levels(self.wrong_pass, self.wrong_fail / max(tests, 1))


def more_pairs_needed(sequence: Sequence, limit: float) -> int | None:
    """How many more observations would decide the gate if the estimate stayed where it is:
    the smallest n' whose projected interval clears the limit, minus today's n. None for a
    tie (an estimate on the limit, which no amount of data decides)."""
    current = sequence.interval()
    if current.estimate is None or sequence.n <= 0 or current.estimate == limit:
        return None
    below = current.estimate < limit

    def decides(n: int) -> bool:
        value = sequence.at(n)
        if value.low is None or value.high is None:
            return False
        return value.high <= limit if below else value.low > limit

    low, high = sequence.n, sequence.n * 2
    while not decides(high):
        if high > HORIZON:
            return None
        low, high = high, high * 2
    while high - low > 1:  # the smallest size that decides, by bisection
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle, high)
    return high - sequence.n


def decide(
    gate: str,
    sequence: Sequence,
    limit: float,
    pairs: int,
    *,
    min_pairs: int = MIN_PAIRS,
    fixed: Interval | None = None,
    scorer: str | None = None,
    note: str | None = None,
    plan: bool = True,
) -> GateResult:
    """The verdict of one gate on one candidate.

    `pairs` is the candidate's pair count; `sequence.n` is how many of them the statistic
    rests on (latency needs both sides to have answered; the agreement drop rests on the
    smaller of candidate and noise floor). `fixed` is the fixed-sample interval, shown beside
    the anytime one. `plan = False` skips the `more_pairs` estimate (the verdict is the same),
    for callers deciding many tests at once.
    """
    value = sequence.interval()
    result = GateResult(gate, limit, value, "insufficient", scorer=scorer, note=note)
    result.fixed = fixed
    # Scale "more of the statistic's observations" back to "more pairs" by their share,
    # assuming the share stays as it is.
    share = sequence.n / pairs if pairs and sequence.n else 1.0
    if value.n == 0 or not value.defined:
        result.reason = "no_data"
        return result
    assert value.low is not None and value.high is not None
    if isinstance(sequence, NormalSequence) and sequence.n < min_pairs:
        result.reason = "too_few_pairs"
        short = math.ceil((min_pairs - sequence.n) / share)
        ahead = more_pairs_needed(sequence, limit) if plan else None
        result.more_pairs = max(short, math.ceil((ahead or 0) / share))
        return result
    if value.high <= limit:
        result.verdict = "pass"
    elif value.low > limit:
        result.verdict = "fail"
    else:
        result.reason = "undecided"
        ahead = more_pairs_needed(sequence, limit) if plan else None
        result.more_pairs = None if ahead is None else max(1, math.ceil(ahead / share))
    return result


def no_evidence(
    gate: str,
    limit: float,
    reason: Reason,
    note: str,
    scorer: str | None = None,
    value: Interval | None = None,
) -> GateResult:
    """A configured gate the data cannot speak to: `insufficient`, never a silent pass."""
    shown = value if value is not None else Interval(None, None, None, 0, "none")
    return GateResult(gate, limit, shown, "insufficient", scorer=scorer, note=note, reason=reason)


def overall(gates: list[GateResult]) -> tuple[Verdict, int | None]:
    """Fail if any gate fails; pass only if there are gates and every one passes; else
    insufficient (a gate without evidence included).

    The pair estimate for `insufficient` is the largest any undecided gate needs (all must be
    decided for a pass), or None when some gate cannot estimate it (no evidence, a tie).
    """
    if any(g.verdict == "fail" for g in gates):
        return "fail", None
    undecided = [g for g in gates if g.verdict == "insufficient"]
    if gates and not undecided:
        return "pass", None
    estimates = [g.more_pairs for g in undecided]
    if not estimates or any(e is None for e in estimates):
        return "insufficient", None
    return "insufficient", max(e for e in estimates if e is not None)


def verdict_line(gate: GateResult) -> str:
    """e.g. `p95_latency_ratio 1.92 [1.71, 2.13] > 1.5` — names the measured value and interval
    (`... contains the limit 1.5` when undecided)."""
    name = f"{gate.gate}[{gate.scorer}]" if gate.scorer else gate.gate
    value = gate.value
    if value.estimate is None:
        return f"{name}: no evidence ({(gate.reason or 'no_data').replace('_', ' ')})"
    interval = (
        f" [{value.low:.3g}, {value.high:.3g}]"
        if value.low is not None and value.high is not None
        else ""
    )
    relation = {"pass": "<=", "fail": ">", "insufficient": "contains the limit"}[gate.verdict]
    if gate.reason == "too_few_pairs":
        relation = f"rests on {value.n:,} pairs, too few to decide against the limit"
    elif gate.reason == "no_noise_floor":
        relation = "(against 1.0, no noise floor) cannot show a drop over the limit"
    return f"{name} {value.estimate:.3g}{interval} {relation} {gate.limit:g}"
