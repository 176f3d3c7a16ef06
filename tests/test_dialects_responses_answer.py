"""shadowtap.dialects.responses_answer: Responses API answers (JSON and SSE) → Completion.

The fixtures under tests/fixtures/dialects/openai-responses/ are written from the API
reference; the first tests prove the openai package's own types accept every one of them.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.shared import ErrorObject
from shadowtap.completion import Completion, ToolCall
from shadowtap.dialects.responses_answer import ResponsesStreamAssembler, completion_from_json
from shadowtap.sse import SSEDecoder

from tests.sdk_shapes import conforms

FIXTURES = Path(__file__).parent / "fixtures" / "dialects" / "openai-responses"
MODEL = "gpt-4.1-2025-04-14"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def assemble(body: bytes, status: int = 200) -> tuple[Completion, list[bool]]:
    assembler = ResponsesStreamAssembler()
    flags = [assembler.feed(body[i : i + 11]) for i in range(0, len(body), 11)]
    return assembler.finish(status), flags


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_json_fixtures_have_the_sdk_shape(name: str) -> None:
    payload = orjson.loads(fixture(name))
    if "error" in payload and "object" not in payload:
        conforms(ErrorObject, payload["error"])
    else:
        conforms(Response, payload)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.sse")))
def test_sse_fixtures_have_the_sdk_shape(name: str) -> None:
    sequence = []
    for event in SSEDecoder().feed(fixture(name)):
        payload = orjson.loads(event.data)
        assert event.event == payload["type"]
        conforms(ResponseStreamEvent, payload)
        sequence.append(payload["sequence_number"])
    assert sequence == list(range(len(sequence)))


EXPECTED = {
    "text": Completion(
        status=200,
        text="The capital of France is Paris.",
        finish_reason="stop",
        prompt_tokens=25,
        completion_tokens=9,
        reasoning_tokens=0,
        cached_tokens=4,
        response_model=MODEL,
    ),
    "function_calls": Completion(
        status=200,
        text=None,  # the reasoning item stays out of the text, its tokens are counted
        tool_calls=[
            ToolCall("get_weather", '{"city":"Paris"}', "call_1"),
            ToolCall("get_weather", '{"city":"Tokyo"}', "call_2"),
        ],
        finish_reason="tool_calls",
        prompt_tokens=82,
        completion_tokens=81,
        reasoning_tokens=64,
        cached_tokens=0,
        response_model="o4-mini-2025-04-16",
    ),
    "incomplete": Completion(
        status=200,
        text="The history of Paris begins",
        finish_reason="length",
        prompt_tokens=14,
        completion_tokens=5,
        reasoning_tokens=0,
        cached_tokens=0,
        response_model=MODEL,
    ),
    "refusal": Completion(
        status=200,
        text="I'm sorry, I can't help with that.",
        finish_reason="stop",
        prompt_tokens=40,
        completion_tokens=10,
        reasoning_tokens=0,
        cached_tokens=0,
        response_model=MODEL,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_json_and_stream_give_the_expected_completion(name: str) -> None:
    assert completion_from_json(fixture(f"{name}.json"), 200) == EXPECTED[name]
    streamed, flags = assemble(fixture(f"{name}.sse"))
    assert streamed == EXPECTED[name]
    assert flags.count(True) == 1


def test_a_function_call_starts_the_answer() -> None:
    body = fixture("function_calls.sse")
    added = body.index(b'"type":"function_call","status":"in_progress"')
    event_end = body.index(b"\n\n", added) + 2
    assembler = ResponsesStreamAssembler()
    assert not assembler.feed(body[:added])  # created, in_progress, the reasoning item
    assert assembler.feed(body[added:event_end])


def test_a_failed_response_keeps_its_text_and_reports_the_error() -> None:
    failed, _ = assemble(fixture("failed.sse"))
    assert failed.text == "Once upon"
    assert failed.error == "The model failed to generate a response."
    assert failed.finish_reason is None
    as_json = completion_from_json(fixture("failed.json"), 200)
    assert (as_json.text, as_json.error) == ("", "The model failed to generate a response.")


def test_errors() -> None:
    message = "Rate limit reached for gpt-4.1 in organization org-x on tokens per min (TPM)."
    assert completion_from_json(fixture("error.json"), 429).error == message
    assert assemble(fixture("error.sse"))[0].error == message
    assert assemble(fixture("error.json"), 429)[0].error == message  # JSON to a streamed call
    assert completion_from_json(b'{"object": "response"}', 200).error == (
        "invalid response body: output is not a list"
    )


def test_a_background_response_is_not_an_answer_yet() -> None:
    queued = orjson.loads(fixture("text.json")) | {"status": "queued", "output": []}
    assert completion_from_json(orjson.dumps(queued), 200).error == "response is queued"


def test_a_stream_cut_short_keeps_its_text_and_says_so() -> None:
    body = fixture("text.sse")
    completion, _ = assemble(body[: body.index(b"event: response.output_text.done")])
    assert completion.text == "The capital of France is Paris."
    assert completion.finish_reason is None and completion.prompt_tokens is None
    assert completion.error == "stream ended before response.completed"


def test_a_stream_without_deltas_is_read_from_its_final_response() -> None:
    final = orjson.loads(fixture("function_calls.json"))
    event = {"type": "response.completed", "sequence_number": 0, "response": final}
    body = b"event: response.completed\ndata: " + orjson.dumps(event) + b"\n\n"
    assert assemble(body)[0] == EXPECTED["function_calls"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'data: {"type":"response.function_call_arguments.delta","delta":"{"}\n\n',
         "invalid stream: a function call event without an output_index"),
        (b'data: {"type":"response.output_text.delta","delta":7}\n\n',
         "invalid stream: delta is not a string"),
        (b'data: {"type":"response.completed"}\n\n',
         "invalid stream: response.completed has no response"),
        (b"data: [DONE]\n\n", "invalid stream: data is not JSON: [DONE]"),
    ],
)  # fmt: skip
def test_garbage_is_an_error_not_an_exception(body: bytes, error: str) -> None:
    assert assemble(body)[0].error == error
