"""`refusal`: 0 when exactly one side refused, 1 when both or neither did.

A candidate that refuses what production answers (or answers what production refuses) is a
behaviour change no text distance shows clearly. An answer counts as a refusal when its
`finish_reason` is `content_filter`, or when one of the phrases below appears in its first
`window_chars` characters (case-folded, curly apostrophes straightened) — refusals come first.

Default phrases (`phrases` replaces them; `extra_phrases` adds to them):
"i can't help with", "i cannot help with", "i can't assist with", "i cannot assist with",
"i'm not able to help", "i am not able to help", "i can't provide", "i cannot provide",
"i won't be able to", "i'm unable to", "i am unable to", "i must decline", "i can't comply",
"i cannot comply", "i'm sorry, but i can't", "i'm sorry, but i cannot",
"as an ai language model, i cannot", "i'm not comfortable", "against my guidelines".

    [scorers.refusal]
    type = "refusal"
    extra_phrases = ["je ne peux pas"]
    threshold = 1.0
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from shadowtap.completion import Completion
from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict

DEFAULT_PHRASES = (
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm not able to help",
    "i am not able to help",
    "i can't provide",
    "i cannot provide",
    "i won't be able to",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "i can't comply",
    "i cannot comply",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "as an ai language model, i cannot",
    "i'm not comfortable",
    "against my guidelines",
)


def _fold(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").casefold().split())


class RefusalOptions(ScorerOptions):
    phrases: list[str] | None = None
    extra_phrases: list[str] = []
    window_chars: Annotated[int, Field(gt=0)] = 400


class Refusal(CpuScorer[RefusalOptions]):
    Options = RefusalOptions
    reads_request = False

    def __init__(self, name: str, options: RefusalOptions) -> None:
        super().__init__(name, options)
        base = DEFAULT_PHRASES if options.phrases is None else options.phrases
        self._phrases = tuple(_fold(p) for p in (*base, *options.extra_phrases) if p.strip())

    def refused(self, completion: Completion) -> bool:
        if completion.finish_reason == "content_filter":
            return True
        head = _fold((completion.text or "")[: self.options.window_chars])
        return any(phrase in head for phrase in self._phrases)

    def score(self, pair: Pair) -> Result:
        if pair.primary.embeddings is not None or pair.target.embeddings is not None:
            return None  # an embedding model neither answers nor refuses
        a, b = self.refused(pair.primary), self.refused(pair.target)
        return Verdict(1.0 if a == b else 0.0, {"primary_refused": a, "target_refused": b})
