"""Two answers side by side with the words that differ marked, as escaped HTML.

Word-level (`difflib.SequenceMatcher` over words, each with the spaces after it), so a
paraphrase shows which words changed rather than which characters. Spaces are never tokens of
their own: they would match everywhere and make the matcher cubic. Only the first `MAX_TOKENS`
words of each text are matched (a stored answer can be megabytes; the matcher's worst case is
quadratic, and its "popular element" heuristic keeps common words from making it worse); the
rest is shown unmarked.

Example: `mark_differences("the cat sat", "the dog sat")` ->
`('the <mark class="del">cat </mark>sat', 'the <mark class="ins">dog </mark>sat')`.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from html import escape

TOKEN = re.compile(r"\s+|\S+\s*")  # a word with the spaces after it (or leading spaces)
MAX_TOKENS = 1_000


def _marked(tokens: list[str], css: str) -> str:
    text = escape("".join(tokens))
    return f'<mark class="{css}">{text}</mark>' if text.strip() else text


def mark_differences(primary: str, candidate: str) -> tuple[str, str]:
    """(primary, candidate) as escaped HTML, differing words in <mark class="del"/"ins">."""
    a, b = TOKEN.findall(primary), TOKEN.findall(candidate)
    head_a, head_b = a[:MAX_TOKENS], b[:MAX_TOKENS]
    left, right = [], []
    matcher = SequenceMatcher(None, head_a, head_b)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            left.append(escape("".join(head_a[i1:i2])))
            right.append(escape("".join(head_b[j1:j2])))
            continue
        if i2 > i1:
            left.append(_marked(head_a[i1:i2], "del"))
        if j2 > j1:
            right.append(_marked(head_b[j1:j2], "ins"))
    left.append(escape("".join(a[MAX_TOKENS:])))
    right.append(escape("".join(b[MAX_TOKENS:])))
    return "".join(left), "".join(right)
