"""`exact_match`: 1 when the two answers are the same text after normalization, else 0.

Normalization: Unicode NFC, whitespace runs collapsed and trimmed, and (unless
`case_sensitive = true`) case-folded. Two empty answers agree. Not applicable when neither
answer has text but one made tool calls.

    [scorers.exact]
    type = "exact_match"
    case_sensitive = false
"""

from __future__ import annotations

import unicodedata

from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, answer_texts


class ExactMatchOptions(ScorerOptions):
    case_sensitive: bool = False


class ExactMatch(CpuScorer[ExactMatchOptions]):
    Options = ExactMatchOptions
    reads_request = False

    def _normalize(self, text: str) -> str:
        text = " ".join(unicodedata.normalize("NFC", text).split())
        return text if self.options.case_sensitive else text.casefold()

    def score(self, pair: Pair) -> Result:
        texts = answer_texts(pair)
        if texts is None:
            return None
        a, b = texts
        return 1.0 if self._normalize(a) == self._normalize(b) else 0.0
