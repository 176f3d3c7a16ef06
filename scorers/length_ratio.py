"""`length_ratio`: shorter answer length over longer, so 1 = same length, 0.5 = one is twice
the other. A cheap signal for truncation or rambling that text distance dilutes.

`unit = "chars"` (default) or `"words"` (whitespace-separated). Two empty answers agree; not
applicable when neither answer has text but one made tool calls.

    [scorers.length]
    type = "length_ratio"
    unit = "words"
    threshold = 0.5
"""

from __future__ import annotations

from typing import Literal

from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict, answer_texts


class LengthRatioOptions(ScorerOptions):
    unit: Literal["chars", "words"] = "chars"


class LengthRatio(CpuScorer[LengthRatioOptions]):
    Options = LengthRatioOptions
    reads_request = False

    def _length(self, text: str) -> int:
        return len(text.split()) if self.options.unit == "words" else len(text.strip())

    def score(self, pair: Pair) -> Result:
        texts = answer_texts(pair)
        if texts is None:
            return None
        a, b = (self._length(t) for t in texts)
        ratio = 1.0 if max(a, b) == 0 else min(a, b) / max(a, b)
        return Verdict(ratio, {"primary": a, "target": b, "unit": self.options.unit})
