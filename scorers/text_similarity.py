"""`text_similarity`: how much of the two answers' wording is shared, in [0, 1].

Both answers are split into word tokens (case-folded; punctuation dropped; each CJK character
is its own token since those scripts do not separate words with spaces), then compared with
rapidfuzz's Indel similarity over the *token sequences* — `1 - insertions+deletions / total`:

* `method = "sequence"` (default): tokens in order, so reordered sentences lose some credit;
* `method = "bag"`: tokens sorted first, so only the vocabulary and its counts matter.

Comparing token lists rather than characters keeps the cost near (tokens² / 64): ~1 ms for two
10 kB answers. `max_tokens` (default 10 000 per side, ~60 kB of English) bounds that quadratic
part whatever the answers' size: only the leading tokens are read and compared, and
`detail.truncated` says so.

Two empty answers agree (1.0); one empty answer scores 0. Not applicable when neither answer
has text but one made tool calls.

    [scorers.similarity]
    type = "text_similarity"
    method = "sequence"
    threshold = 0.6
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Annotated, Literal

from pydantic import Field
from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict, answer_texts

# One token per CJK ideograph / kana / hangul syllable; otherwise a run of word characters.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")


def tokenize(text: str, limit: int | None = None) -> list[str]:
    """Word tokens, case-folded; with `limit`, only the first `limit` are read."""
    return [m.group() for m in islice(_TOKEN.finditer(text.casefold()), limit)]


class TextSimilarityOptions(ScorerOptions):
    method: Literal["sequence", "bag"] = "sequence"
    max_tokens: Annotated[int, Field(gt=0)] = 10_000


class TextSimilarity(CpuScorer[TextSimilarityOptions]):
    Options = TextSimilarityOptions
    reads_request = False

    def score(self, pair: Pair) -> Result:
        # Imported here, not at module import: the proxy pays for it only when configured.
        # (Not kept on the instance either: scorers stay picklable for a process pool.)
        from rapidfuzz.distance import Indel

        texts = answer_texts(pair)
        if texts is None:
            return None
        limit = self.options.max_tokens
        # One token past the limit tells that there was more.
        a, b = (tokenize(t, limit + 1) for t in texts)
        if not a and not b:
            # No word characters at all (emoji, punctuation): fall back to the raw text.
            return 1.0 if texts[0].strip() == texts[1].strip() else 0.0
        truncated = len(a) > limit or len(b) > limit
        a, b = a[:limit], b[:limit]
        if self.options.method == "bag":
            a, b = sorted(a), sorted(b)
        similarity = float(Indel.normalized_similarity(a, b))
        return Verdict(similarity, {"truncated": True}) if truncated else similarity
