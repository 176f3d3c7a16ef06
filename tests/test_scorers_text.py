"""Text scorers on hand-built pairs: exact_match, text_similarity, length_ratio, refusal."""

from __future__ import annotations

from typing import Any

import pytest
from shadowtap.completion import Completion, ToolCall
from shadowtap.scorers.base import CpuScorer, Pair, Verdict

from tests.scorer_tables import scorers_from

LONG = " ".join(f"word{i % 997} token{i % 13}" for i in range(9_000))  # ~100 kB


def scorer(type_name: str, **options: Any) -> CpuScorer[Any]:
    built = scorers_from({"s": {"type": type_name, **options}})[0]
    assert isinstance(built, CpuScorer)
    return built


def pair(a: str | Completion, b: str | Completion) -> Pair:
    primary = a if isinstance(a, Completion) else Completion(status=200, text=a)
    target = b if isinstance(b, Completion) else Completion(status=200, text=b)
    return Pair(
        {"messages": [{"role": "user", "content": "q"}]}, primary, target, "cand", "candidate"
    )


def value(result: float | Verdict | None) -> float | None:
    return result.score if isinstance(result, Verdict) else result


TOOL_ONLY = Completion(status=200, text=None, tool_calls=[ToolCall("f", "{}")])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("Paris.", "Paris.", 1.0),
        ("  Paris\n is  the capital ", "paris is the CAPITAL", 1.0),
        ("Café", "Cafe\u0301", 1.0),  # NFC: composed and decomposed é are one text
        ("Paris.", "Lyon.", 0.0),
        ("", "", 1.0),
        ("", "something", 0.0),
        ("東京", "東京", 1.0),
        (LONG, LONG, 1.0),
        (LONG, LONG + " extra", 0.0),
    ],
)
def test_exact_match(a: str, b: str, expected: float) -> None:
    assert value(scorer("exact_match").score(pair(a, b))) == expected


def test_exact_match_case_sensitive_and_tool_only() -> None:
    assert scorer("exact_match", case_sensitive=True).score(pair("Paris", "paris")) == 0.0
    assert scorer("exact_match").score(pair(TOOL_ONLY, TOOL_ONLY)) is None


def test_text_similarity_orders_identical_paraphrase_and_unrelated() -> None:
    sim = scorer("text_similarity")
    base = "The capital of France is Paris, a city on the Seine known for the Eiffel Tower."
    paraphrase = "Paris, which sits on the Seine and has the Eiffel Tower, is France's capital."
    unrelated = "Photosynthesis converts light energy into chemical energy in plants."
    identical = value(sim.score(pair(base, base)))
    close = value(sim.score(pair(base, paraphrase)))
    far = value(sim.score(pair(base, unrelated)))
    assert identical == 1.0
    assert far is not None and close is not None
    assert 0.0 <= far < close < 0.9


def test_text_similarity_ignores_case_and_punctuation_but_bag_ignores_order() -> None:
    assert value(scorer("text_similarity").score(pair("Hello, World!", "hello world"))) == 1.0
    reordered = pair("alpha beta gamma delta", "delta gamma beta alpha")
    in_order = value(scorer("text_similarity").score(reordered))
    assert in_order is not None and in_order < 0.5
    assert value(scorer("text_similarity", method="bag").score(reordered)) == 1.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", 1.0),
        ("", "an answer", 0.0),
        ("🙂🙂", "🙂🙂", 1.0),  # no word characters: falls back to the raw text
        ("🙂", "🙁", 0.0),
    ],
)
def test_text_similarity_edges(a: str, b: str, expected: float) -> None:
    assert value(scorer("text_similarity").score(pair(a, b))) == expected


def test_text_similarity_unicode_cjk_tokens() -> None:
    # CJK has no spaces: per-character tokens give partial credit instead of all-or-nothing.
    result = value(
        scorer("text_similarity").score(pair("東京は日本の首都です", "東京は日本の都市です"))
    )
    assert result is not None and 0.7 < result < 1.0


def test_text_similarity_long_texts_are_bounded_and_flagged() -> None:
    sim = scorer("text_similarity", max_tokens=5_000)
    result = sim.score(pair(LONG, LONG.replace("token3", "other")))
    assert isinstance(result, Verdict)
    assert result.detail == {"truncated": True}
    assert result.score is not None and 0.8 < result.score < 1.0
    assert value(scorer("text_similarity").score(pair(TOOL_ONLY, TOOL_ONLY))) is None


@pytest.mark.parametrize(
    ("a", "b", "unit", "expected"),
    [
        ("abcd", "ab", "chars", 0.5),
        ("ab", "abcd", "chars", 0.5),
        ("one two three four", "one two", "words", 0.5),
        ("", "", "chars", 1.0),
        ("", "x", "chars", 0.0),
        ("é", "e", "chars", 1.0),
        (LONG, LONG, "words", 1.0),
    ],
)
def test_length_ratio(a: str, b: str, unit: str, expected: float) -> None:
    assert value(scorer("length_ratio", unit=unit).score(pair(a, b))) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("Here is the recipe.", "Sure! The recipe is below.", 1.0),
        (
            "I can't help with that.",
            "I\u2019m sorry, but I can\u2019t do that.",
            1.0,
        ),  # curly quotes
        ("Here is the recipe.", "I'm sorry, but I cannot help with that request.", 0.0),
        ("I must decline this request.", "Here you go: step one...", 0.0),
        ("", "", 1.0),
    ],
)
def test_refusal(a: str, b: str, expected: float) -> None:
    assert value(scorer("refusal").score(pair(a, b))) == expected


def test_refusal_content_filter_window_and_custom_phrases() -> None:
    filtered = Completion(status=200, text="", finish_reason="content_filter")
    result = scorer("refusal").score(pair("Sure.", filtered))
    assert isinstance(result, Verdict)
    assert result.score == 0.0
    assert result.detail == {"primary_refused": False, "target_refused": True}
    # A refusal phrase deep inside a long answer is quoting, not refusing.
    late = "x " * 1000 + "I can't help with that"
    assert value(scorer("refusal").score(pair("Sure.", late))) == 1.0
    french = scorer("refusal", extra_phrases=["Je ne peux pas"])
    assert value(french.score(pair("Voici.", "Je ne peux pas répondre."))) == 0.0
    only_custom = scorer("refusal", phrases=["nope"])
    assert value(only_custom.score(pair("Sure.", "I can't help with that"))) == 1.0
