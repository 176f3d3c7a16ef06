"""Differing words marked for the HTML's side-by-side pairs: escaped, word-level, bounded."""

from __future__ import annotations

import time

from shadowtap.report.diff import MAX_TOKENS, mark_differences


def test_changed_words_are_marked_on_each_side() -> None:
    left, right = mark_differences("the cat sat down", "the dog sat down")
    assert left == 'the <mark class="del">cat </mark>sat down'
    assert right == 'the <mark class="ins">dog </mark>sat down'
    same = mark_differences("same words", "same words")
    assert same == ("same words", "same words")


def test_stored_markup_is_shown_never_run() -> None:
    left, right = mark_differences("<b>hi</b>", "<script>alert(1)</script>")
    assert "<script" not in right and "<b>" not in left
    assert right.count("&lt;") == 2 and left.count("&lt;") == 2


def test_huge_answers_are_matched_on_their_head_only() -> None:
    # A small vocabulary: every word matches in many places, the matcher's worst case.
    a = " ".join(f"w{i % 7}" for i in range(50_000)) + " w49999"
    b = " ".join(f"w{i % 5}" for i in range(50_000)) + " v49999"
    began = time.perf_counter()
    left, right = mark_differences(a, b)
    assert time.perf_counter() - began < 5  # a generous bound: quadratic would take minutes
    assert left.endswith("w49999") and right.endswith("v49999")  # nothing dropped
    assert left.count("<mark") <= MAX_TOKENS
