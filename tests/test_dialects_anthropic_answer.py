"""shadowtap.dialects.anthropic_answer: Messages API answers (JSON and SSE) → Completion.

The fixtures under tests/fixtures/dialects/anthropic-messages/ are written from the API
reference; the first tests prove the official SDK's own types accept every one of them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from shadowtap.completion import Completion, ToolCall
from shadowtap.dialects.anthropic_answer import AnthropicStreamAssembler, completion_from_json
from shadowtap.sse import SSEDecoder

from tests.sdk_shapes import conforms

FIXTURES = Path(__file__).parent / "fixtures" / "dialects" / "anthropic-messages"
MODEL = "claude-sonnet-4-5-20250929"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def events(name: str) -> list[tuple[str, dict[str, object]]]:
    return [(e.event, orjson.loads(e.data)) for e in SSEDecoder().feed(fixture(name))]


def assemble(body: bytes, status: int = 200) -> tuple[Completion, list[bool]]:
    assembler = AnthropicStreamAssembler()
    flags = [assembler.feed(body[i : i + 7]) for i in range(0, len(body), 7)]
    return assembler.finish(status), flags


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_json_fixtures_have_the_sdk_shape(name: str) -> None:
    payload = orjson.loads(fixture(name))
    conforms(ErrorResponse if payload["type"] == "error" else Message, payload)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.sse")))
def test_sse_fixtures_have_the_sdk_shape(name: str) -> None:
    for event, payload in events(name):
        assert event == payload["type"]  # the SSE event name repeats the data's type
        if event == "ping":
            assert payload == {"type": "ping"}
        else:
            conforms(ErrorResponse if event == "error" else RawMessageStreamEvent, payload)


TEXT = Completion(
    status=200,
    text="The capital of France is Paris.",
    finish_reason="stop",
    prompt_tokens=25,  # 21 new + 4 read from the cache
    completion_tokens=9,
    cached_tokens=4,
    response_model=MODEL,
)
WEATHER_CALLS = [
    ToolCall("get_weather", '{"city":"Paris"}', "toolu_01A09q90qw90lq917835lq9"),
    ToolCall("get_weather", '{"city":"Tokyo"}', "toolu_01B18r81rx81mr826924mr8"),
]
EXPECTED = {
    "text": TEXT,
    "tool_use": Completion(
        status=200,
        text=None,
        tool_calls=WEATHER_CALLS,
        finish_reason="tool_calls",
        prompt_tokens=82,
        completion_tokens=17,
        response_model=MODEL,
    ),
    "text_and_tool_use": Completion(
        status=200,
        text="I'll look that up.",  # the thinking block stays out of the text
        tool_calls=[
            ToolCall("get_time", '{"timezone":"Europe/Oslo"}', "toolu_01T1x1zJBLjuzxhb5CRhpeyG")
        ],
        finish_reason="tool_calls",
        prompt_tokens=412 + 1024 + 2048,
        completion_tokens=96,
        reasoning_tokens=41,
        cached_tokens=2048,
        response_model=MODEL,
    ),
    "max_tokens": Completion(
        status=200,
        text="The history of Paris begins",
        finish_reason="length",
        prompt_tokens=14,
        completion_tokens=5,
        response_model="claude-haiku-4-5-20251001",
    ),
}


def canonical(completion: Completion) -> Completion:
    """Tool-call arguments re-encoded: a stream keeps the model's spacing, JSON is compact."""
    calls = [replace(c, arguments=orjson.dumps(orjson.loads(c.arguments)).decode())
             for c in completion.tool_calls]  # fmt: skip
    return replace(completion, tool_calls=calls)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_json_and_stream_give_the_expected_completion(name: str) -> None:
    assert completion_from_json(fixture(f"{name}.json"), 200) == EXPECTED[name]
    streamed, flags = assemble(fixture(f"{name}.sse"))
    assert canonical(streamed) == EXPECTED[name]
    assert flags.count(True) == 1


def test_the_first_token_is_the_first_visible_one() -> None:
    body = fixture("text_and_tool_use.sse")
    assembler = AnthropicStreamAssembler()
    thinking_end = body.index(b"event: content_block_stop")  # the thinking block is done
    assert not assembler.feed(body[:thinking_end])  # thinking and signatures are no token
    text_at = body.index(b"I'll look")
    assert not assembler.feed(body[thinking_end:text_at])
    assert assembler.feed(body[text_at:])
    tool_only = fixture("tool_use.sse")
    starts_call = tool_only.index(b"toolu_01A09") + 200
    assert AnthropicStreamAssembler().feed(tool_only[:starts_call])  # the call's start counts


def test_refusal_is_content_filter_with_what_was_said() -> None:
    refused = completion_from_json(fixture("refusal.json"), 200)
    assert (refused.text, refused.finish_reason, refused.error) == ("", "content_filter", None)
    streamed, _ = assemble(fixture("refusal.sse"))
    assert (streamed.text, streamed.finish_reason, streamed.completion_tokens) == (
        "Here is how",
        "content_filter",
        4,
    )


def test_errors() -> None:
    overloaded = completion_from_json(fixture("error.json"), 529)
    assert (overloaded.status, overloaded.error) == (529, "Overloaded")
    assert completion_from_json(fixture("error.json"), 200).error == "Overloaded"
    in_stream, _ = assemble(fixture("error.sse"))
    assert (in_stream.text, in_stream.error) == ("Once upon", "Overloaded")
    # A streamed request answered with a JSON error body: read as JSON.
    answered, flags = assemble(fixture("error.json"), 529)
    assert (answered.error, flags.count(True)) == ("Overloaded", 0)
    assert completion_from_json(b"", 500).error == "HTTP 500"
    assert completion_from_json(b"<html>", 200).error.startswith("invalid response body: not JSON")
    assert completion_from_json(b'{"type": "message"}', 200).error == (
        "invalid response body: content is not a list"
    )


def test_a_stream_cut_short_keeps_its_text_and_says_so() -> None:
    body = fixture("text.sse")
    cut = body.index(b"event: message_delta")
    completion, _ = assemble(body[:cut])
    assert completion.text == TEXT.text and completion.finish_reason is None
    assert completion.error == "stream ended before message_stop"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"input_json_delta","partial_json":"{"}}\n\n',
            "invalid stream: input_json_delta outside a tool_use block",
        ),
        (b"event: content_block_start\ndata: {\"type\":\"content_block_start\"}\n\n",
         "invalid stream: a content block event without an index"),
        (b"data: [1, 2]\n\n", "invalid stream: data is not a JSON object: [1, 2]"),
        (b"event: error\ndata: upstream exploded\n\n", "upstream exploded"),
        (b"retry: 5\nfoo: bar\n\n", "invalid stream: unexpected line foo: bar"),
    ],
)  # fmt: skip
def test_garbage_is_an_error_not_an_exception(body: bytes, error: str) -> None:
    assert assemble(body)[0].error == error


def test_unknown_events_are_ignored() -> None:
    body = fixture("text.sse").replace(
        b"event: ping", b'event: future_event\ndata: {"type": "future_event"}\n\nevent: ping'
    )
    assert assemble(body)[0] == TEXT
