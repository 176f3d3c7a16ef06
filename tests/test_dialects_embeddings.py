"""shadowtap.dialects.embeddings: what an embeddings request embeds, and an answer's vectors."""

from __future__ import annotations

import base64
from array import array
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types import CreateEmbeddingResponse
from shadowtap.dialects import DIALECTS, Untranslatable
from shadowtap.dialects.embeddings import (
    MAX_VALUES,
    EmbeddingsRequest,
    completion_from_json,
    parse,
    render,
)

from tests.sdk_shapes import conforms

FIXTURES = Path(__file__).parent / "fixtures" / "dialects" / "openai-embeddings"
VECTORS = [[0.25, -0.5, 0.125], [1.0, 0.0, -0.75]]  # exact in float32, so both formats agree


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", ["float.json", "base64.json"])
def test_both_encodings_give_the_same_vectors(name: str) -> None:
    completion = completion_from_json(fixture(name), 200)
    assert completion.ok and completion.embeddings == [array("d", v) for v in VECTORS]
    assert (completion.prompt_tokens, completion.response_model) == (8, "text-embedding-3-small")
    assert completion.text is None and completion.finish_reason is None


def test_the_float_fixture_has_the_sdk_shape() -> None:
    # The SDK decodes base64 itself before validating, so only the float shape is its type.
    conforms(CreateEmbeddingResponse, orjson.loads(fixture("float.json")))


def test_rows_are_put_in_input_order() -> None:
    payload = orjson.loads(fixture("float.json"))
    payload["data"].reverse()
    completion = completion_from_json(orjson.dumps(payload), 200)
    assert completion.embeddings == [array("d", v) for v in VECTORS]


def answer(*embeddings: object) -> bytes:
    rows = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)]
    return orjson.dumps({"object": "list", "data": rows, "model": "m"})


def f32(*values: float) -> str:
    return base64.b64encode(array("f", values).tobytes()).decode()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (answer([0.1, "x"]), "data[0].embedding holds something other than numbers"),
        (answer("not base64!"), "data[0].embedding is not base64"),
        (answer(base64.b64encode(b"abc").decode()), "not a whole number of float32 values"),
        (answer([]), "data[0].embedding is empty"),
        (answer({"v": 1}), "neither a list of floats nor base64"),
        (answer(f32(1.0, float("nan"))), "data[0].embedding holds a value that is not finite"),
        (answer([1e308, 1e308]), "holds a value that is not finite"),
        (orjson.dumps({"data": [{"index": 1, "embedding": [1.0]}]}), "data[].index is not 0..n-1"),
        (orjson.dumps({"data": [{"index": 0, "embedding": [1.0]}] * 2}), "not 0..n-1"),
        (orjson.dumps({"object": "list"}), "data is not a list of objects"),
    ],
)
def test_a_bad_answer_is_an_error_not_an_exception(body: bytes, error: str) -> None:
    completion = completion_from_json(body, 200)
    assert completion.error is not None and error in completion.error
    assert completion.embeddings is None


def test_an_answer_too_large_to_read_is_refused_before_parsing() -> None:
    huge = b'{"data": [{"index": 0, "embedding": [' + b"0," * MAX_VALUES + b"0]}]}"
    completion = completion_from_json(huge, 200)
    assert completion.error == f"answer holds more than {MAX_VALUES} values"
    many = answer(*[f32(*([0.5] * 1000))] * (MAX_VALUES // 1000 + 1))
    assert "more than" in (completion_from_json(many, 200).error or "")


def test_errors_and_a_mislabelled_stream() -> None:
    error = b'{"error": {"message": "Invalid input", "type": "invalid_request_error"}}'
    assert completion_from_json(error, 400).error == "Invalid input"
    assembler = DIALECTS["openai-embeddings"].assembler()
    assert not assembler.feed(fixture("float.json")[:10])
    assert not assembler.feed(fixture("float.json")[10:])
    assert assembler.finish(200).embeddings == [array("d", v) for v in VECTORS]


@pytest.mark.parametrize(
    ("value", "inputs", "kind", "single"),
    [
        ("hello", ["hello"], "text", True),
        (["a", "b"], ["a", "b"], "text", False),
        ([1, 2, 3], [[1, 2, 3]], "tokens", True),
        ([[1, 2], [3]], [[1, 2], [3]], "tokens", False),
    ],
)
def test_the_four_input_shapes(value: Any, inputs: list[Any], kind: str, single: bool) -> None:
    request = parse({"model": "text-embedding-3-small", "input": value, "dimensions": 256})
    assert request == EmbeddingsRequest(
        "text-embedding-3-small",
        inputs,
        kind,
        single,
        None,
        256,  # type: ignore[arg-type]
    )
    assert request.count == len(inputs)
    assert render(request, None) == {
        "model": "text-embedding-3-small",
        "input": value,
        "dimensions": 256,
    }


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"model": "m", "input": []},
        {"model": "m", "input": 5},
        {"model": "m", "input": ["a", 1]},
        {"model": "m", "input": [[1, "a"]]},
        {"model": "m", "input": [[]]},
        {"model": "m", "input": [True]},
        {"model": "m", "input": [-1]},
        {"model": "m", "input": "a", "encoding_format": "int8"},
    ],
)
def test_other_inputs_are_untranslatable(body: dict[str, Any]) -> None:
    with pytest.raises(Untranslatable):
        parse(body)


def test_token_ids_go_to_another_model_only_with_the_same_tokenizer() -> None:
    request = parse({"model": "text-embedding-ada-002", "input": [[9906, 1917]]})
    with pytest.raises(Untranslatable, match="tokenizer"):
        render(request, "nomic-embed-text")
    same = render(request, "text-embedding-3-small", same_tokenizer=True)
    assert same == {"model": "text-embedding-3-small", "input": [[9906, 1917]]}
    assert render(request, "text-embedding-ada-002")["input"] == [[9906, 1917]]
    text = parse({"model": "text-embedding-ada-002", "input": "hi", "encoding_format": "base64"})
    assert render(text, "nomic-embed-text") == {
        "model": "nomic-embed-text",
        "input": "hi",
        "encoding_format": "base64",
    }


def test_embeddings_are_not_translated_to_a_chat_dialect() -> None:
    from shadowtap.dialects import translate

    with pytest.raises(Untranslatable, match="not translated"):
        translate({"model": "m", "input": "hi"}, "openai-embeddings", "openai-chat", "m")
