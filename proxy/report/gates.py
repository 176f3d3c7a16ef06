"""Turning intervals into verdicts: a gate passes or fails only when its interval clears it.

Every gate has the form "value <= limit". With a two-sided interval at `confidence` (0.95):

- `pass` when the whole interval is at or under the limit (high <= limit),
- `fail` when the whole interval is over it (low > limit),
- `insufficient` otherwise — the data cannot yet tell — with an estimate of how many more pairs
  would decide it.

Each verdict is therefore wrong at most (1 - confidence) / 2 of the time (2.5%). A candidate
passes only when every configured gate has evidence and passes (an intersection-union test,
which needs no multiplicity correction); it fails when any gate fails, so with k gates a false
`fail` can reach k x 2.5%. A gate without evidence is `insufficient` with its `reason`: no
evidence is never a pass.
"""

from __future__ import annotations

import math

from shadowtap.report.model import GateResult, Reason, Verdict
from shadowtap.report.stats import Interval, wilson

# Bootstrap percentile intervals are too narrow on tiny samples (and degenerate ones like
# all-1.0 scores have zero width), so gates based on them wait for this many pairs. Wilson
# intervals stay honest at any n, so the error-rate gate does not wait.
MIN_PAIRS = 30


def more_pairs_needed(
    value: Interval, limit: float, pairs: int, confidence: float = 0.95
) -> int | None:
    """How many more pairs would shrink the interval enough to clear `limit`.

    Keeping today's estimate: a Wilson interval is recomputed at larger n directly (its width
    shrinks like 1/n near 0, not 1/sqrt(n)); any other interval's side facing the limit (half
    width h, distance to the limit d) shrinks as 1/sqrt(n), clearing it at n * (h / d)^2.
    None when the estimate sits on the limit: no amount of data decides a true tie.
    """
    if not value.defined or pairs <= 0:
        return None
    assert value.estimate is not None and value.low is not None and value.high is not None
    distance = limit - value.estimate
    if distance == 0:
        return None
    if value.method == "wilson" and value.n > 0:
        return _wilson_more(value.estimate, value.n, limit, confidence, pairs / value.n)
    half = value.high - value.estimate if distance > 0 else value.estimate - value.low
    # A bound from "0 of n" shrinks like 1/n; other widths like 1/sqrt(n).
    power = 1 if value.method == "wilson-bound" else 2
    needed = pairs * (half / abs(distance)) ** power
    return max(1, math.ceil(needed - pairs - 1e-9))  # 1e-9: 225.00000000000006 is 225


def _wilson_more(rate: float, n: int, limit: float, confidence: float, scale: float) -> int:
    def clears(size: int) -> bool:
        interval = wilson(rate * size, size, confidence)
        assert interval.low is not None and interval.high is not None
        return interval.high <= limit if rate < limit else interval.low > limit

    low, high = n, n * 2
    while not clears(high):
        low, high = high, high * 2
    while high - low > 1:  # smallest size that clears, by bisection
        middle = (low + high) // 2
        low, high = (low, middle) if clears(middle) else (middle, high)
    return max(1, math.ceil((high - n) * scale))


def decide(
    gate: str,
    value: Interval,
    limit: float,
    pairs: int,
    *,
    min_pairs: int = MIN_PAIRS,
    confidence: float = 0.95,
    scorer: str | None = None,
    note: str | None = None,
) -> GateResult:
    """The verdict of one gate on one candidate (`pairs` = that candidate's pair count; the
    interval's own `n` is how many of them the statistic rests on)."""
    result = GateResult(gate, limit, value, "insufficient", scorer=scorer, note=note)
    result.reason = "too_few_pairs"
    # The statistic may rest on fewer pairs than the candidate has (latency needs both sides
    # to have answered, the drop the smaller of candidate and noise floor); scale "more of
    # those" back to "more pairs" by their share, assuming the share stays as it is.
    share = value.n / pairs if pairs and value.n else 1.0
    if value.n == 0 or (value.method == "wilson" and not value.defined):
        result.reason = "no_data"
        return result
    if value.method != "wilson" and value.n < min_pairs:
        short = math.ceil((min_pairs - value.n) / share)
        result.more_pairs = max(short, more_pairs_needed(value, limit, pairs) or 0)
        return result
    if not value.defined:
        return result
    assert value.low is not None and value.high is not None
    if value.high <= limit:
        result.verdict, result.reason = "pass", None
    elif value.low > limit:
        result.verdict, result.reason = "fail", None
    else:
        result.reason = "undecided"
        result.more_pairs = more_pairs_needed(value, limit, pairs, confidence)
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
