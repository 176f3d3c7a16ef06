"""embedding_agreement: cosine per input when dimensions match, neighbour-rank agreement when
they do not, bounded work, and the not-applicable cases."""

from __future__ import annotations

import math
import pickle
import random
from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shadowtap.completion import Completion
from shadowtap.scorers.base import Pair, Verdict
from shadowtap.scorers.embedding_agreement import (
    EmbeddingAgreement,
    EmbeddingAgreementOptions,
    ranks,
    spearman,
)
from shadowtap.scorers.registry import available

from tests.examples import examples
from tests.scorer_tables import scorers_from


def scorer(**options: Any) -> EmbeddingAgreement:
    return EmbeddingAgreement("e", EmbeddingAgreementOptions(type="embedding_agreement", **options))


def pair(primary: list[list[float]] | None, target: list[list[float]] | None) -> Pair:
    def answer(vectors: list[list[float]] | None) -> Completion:
        embedded = None if vectors is None else [array("d", v) for v in vectors]
        return Completion(status=200, embeddings=embedded)

    return Pair({"input": ["..."]}, answer(primary), answer(target), "candidate", "candidate")


def verdict(result: object) -> Verdict:
    assert isinstance(result, Verdict)
    return result


def test_registered_as_a_scorer_type_and_built_from_config() -> None:
    assert "embedding_agreement" in available()
    (built,) = scorers_from({"emb": {"type": "embedding_agreement", "max_work": 1000}})
    assert isinstance(built, EmbeddingAgreement) and built.options.max_work == 1000


def test_not_applicable_to_answers_without_vectors() -> None:
    chat = Pair(
        None, Completion(status=200, text="a"), Completion(status=200, text="a"), "c", "candidate"
    )
    assert scorer().score(chat) is None


def test_one_side_without_vectors_scores_zero() -> None:
    result = verdict(scorer().score(pair([[1.0, 0.0]], None)))
    assert (result.score, result.detail) == (0.0, {"reason": "the target has no vectors"})


@pytest.mark.parametrize(
    ("primary", "target", "score", "lowest"),
    [
        ([[1.0, 2.0], [0.0, 1.0]], [[2.0, 4.0], [0.0, 3.0]], 1.0, 1.0),  # length does not matter
        ([[1.0, 0.0]], [[1.0, 1.0]], 0.707107, 0.707107),
        ([[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [-1.0, 0.0]], 0.0, -1.0),  # negative counts 0
        ([[0.0, 0.0]], [[1.0, 0.0]], 0.0, 0.0),  # a zero vector has no direction
    ],
)
def test_same_dimensions_compare_each_pair_by_cosine(
    primary: list[list[float]], target: list[list[float]], score: float, lowest: float
) -> None:
    result = verdict(scorer().score(pair(primary, target)))
    assert result.score == pytest.approx(score, abs=1e-6)
    assert result.detail == {"method": "cosine", "pairs": len(primary), "min": lowest}


def test_a_missing_vector_counts_zero() -> None:
    vectors = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    result = verdict(scorer().score(pair(vectors, vectors[:2])))
    assert result.score == pytest.approx(2 / 3)
    assert result.detail is not None and result.detail["missing"] == 1


def batch(count: int, dim: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0, 1) for _ in range(dim)] for _ in range(count)]


def test_different_dimensions_compare_the_order_of_neighbours() -> None:
    primary = batch(8, 4, seed=1)
    padded = [[*v, 0.0, 0.0, 0.0] for v in primary]  # the same geometry in a bigger space
    same = verdict(scorer().score(pair(primary, padded)))
    assert same.score == pytest.approx(1.0)
    assert same.detail == {"method": "neighbour_rank", "inputs": 8, "rho": 1.0}
    unrelated = verdict(scorer().score(pair(primary, batch(8, 6, seed=2))))
    assert unrelated.score is not None and unrelated.score < 0.5


def at(*degrees: float, pad: int = 0) -> list[list[float]]:
    return [[math.cos(math.radians(d)), math.sin(math.radians(d)), *[0.0] * pad] for d in degrees]


def test_reversed_neighbourhoods_score_zero() -> None:
    # A, B, C at 0°, 10°, 30°: A's nearest is B, B's is A, C's is B. Moving B to 30° and C
    # to 10° reverses every one of those orders.
    result = verdict(scorer().score(pair(at(0, 10, 30), at(0, 30, 10, pad=1))))
    assert result.detail == {"method": "neighbour_rank", "inputs": 3, "rho": -1.0}
    assert result.score == 0.0
    assert verdict(scorer().score(pair(at(0, 10, 30), at(0, 10, 30, pad=1)))).score == 1.0


@pytest.mark.parametrize("count", [1, 2])
def test_a_batch_too_small_to_rank_is_not_applicable(count: int) -> None:
    result = verdict(scorer().score(pair(batch(count, 3, 1), batch(count, 5, 2))))
    assert result.score is None
    assert result.detail == {
        "method": "neighbour_rank",
        "reason": "dimensions differ, fewer than 3 inputs",
    }


def test_a_side_whose_inputs_all_look_alike_orders_nothing() -> None:
    result = verdict(scorer().score(pair([[1.0, 0.0]] * 4, batch(4, 3, 1))))
    assert result.score is None
    assert result.detail == {
        "method": "neighbour_rank",
        "reason": "no input has ordered neighbours",
    }


def test_work_is_bounded_by_max_work() -> None:
    vectors = batch(10, 100, seed=3)
    capped = verdict(scorer(max_work=1000).score(pair(vectors, vectors)))  # 3 pairs of 3·100
    assert capped.detail == {"method": "cosine", "pairs": 3, "min": 1.0, "truncated": True}
    too_long = verdict(scorer(max_work=200).score(pair(vectors, vectors)))
    assert too_long.score is None and too_long.detail is not None
    ranked = verdict(scorer(max_work=1000).score(pair(batch(10, 20, 4), batch(10, 30, 5))))
    # n(n+1)/2 · (20 + 30) ≤ 1000 → 5 inputs
    assert ranked.detail is not None and ranked.detail["inputs"] == 5 and ranked.detail["truncated"]
    none_fit = verdict(scorer(max_work=100).score(pair(batch(10, 20, 4), batch(10, 30, 5))))
    assert none_fit.detail == {
        "method": "neighbour_rank",
        "reason": "dimensions differ, vectors too long",
    }


def test_vectors_of_several_lengths_on_one_side_are_a_scorer_error() -> None:
    with pytest.raises(ValueError, match="the primary's vectors have different lengths"):
        scorer().score(pair([[1.0], [1.0, 2.0]], [[1.0], [1.0]]))


def test_the_scorer_and_its_pairs_pickle_for_a_process_pool() -> None:
    original = pair(batch(3, 4, 1), batch(3, 4, 2))
    copy = pickle.loads(pickle.dumps((scorer(), original)))
    assert copy[0].score(copy[1]) == scorer().score(original)


def test_ranks_and_spearman() -> None:
    assert ranks([3.0, 1.0, 3.0]) == [2.5, 1.0, 2.5]
    assert spearman([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None


_vectors = st.integers(1, 6).flatmap(
    lambda dim: st.lists(
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=dim, max_size=dim),
        min_size=1,
        max_size=6,
    )
)


@settings(max_examples=examples(200), deadline=None)
@given(_vectors, _vectors)
def test_a_score_is_in_range_or_not_applicable(a: list[list[float]], b: list[list[float]]) -> None:
    result = scorer().score(pair(a, b))
    value = result.score if isinstance(result, Verdict) else result
    assert value is None or 0.0 <= value <= 1.0
    itself = scorer().score(pair(a, a))
    same = itself.score if isinstance(itself, Verdict) else itself
    assert same is None or same == pytest.approx(1.0) or any(not any(v) for v in a)


def test_text_scorers_leave_an_embeddings_pair_alone() -> None:
    """An embeddings answer has no text: a text scorer's 1.0 on two empty strings would be a
    meaningless agreement, and a judge would be paid to read nothing."""
    tables = {
        name: {"type": name}
        for name in ("text_similarity", "exact_match", "length_ratio", "refusal")
    }
    embedded = pair([[1.0, 0.0]], [[1.0, 0.0]])
    for built in scorers_from(tables):
        assert built.score(embedded) is None, built  # type: ignore[attr-defined]
