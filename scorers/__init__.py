"""Scorers: how far a shadow's answer is from the primary's, as a number in [0, 1].

The public surface for plug-in authors is what this module exports:

    from shadowtap.scorers import CpuScorer, Pair, ScorerOptions, Verdict

    class SameFirstWord(CpuScorer[ScorerOptions]):
        def score(self, pair: Pair) -> float | None:
            ...
"""

from shadowtap.scorers.base import (
    CpuScorer,
    IoScorer,
    IoScorerOptions,
    Pair,
    Result,
    Scorer,
    ScorerOptions,
    ScorerSkipped,
    Verdict,
)

__all__ = [
    "CpuScorer",
    "IoScorer",
    "IoScorerOptions",
    "Pair",
    "Result",
    "Scorer",
    "ScorerOptions",
    "ScorerSkipped",
    "Verdict",
]
