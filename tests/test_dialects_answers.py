"""The same answers recorded in each dialect read into the same Completion: the text, the
tool calls, the finish reason. That is what lets a scorer compare a primary on one API with a
candidate on another, like with like."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from shadowtap.completion import Completion
from shadowtap.dialects import DIALECTS
from shadowtap.sse import SSEDecoder

from tests.sdk_shapes import conforms

FIXTURES = Path(__file__).parent / "fixtures" / "dialects"
# The same three answers, under each dialect's own name for them.
SAME_ANSWERS = {
    "plain text": {
        "openai-chat": "text",
        "anthropic-messages": "text",
        "openai-responses": "text",
    },
    "two tool calls": {
        "openai-chat": "tool_calls",
        "anthropic-messages": "tool_use",
        "openai-responses": "function_calls",
    },
    "cut by the token cap": {
        "openai-chat": "length",
        "anthropic-messages": "max_tokens",
        "openai-responses": "incomplete",
    },
}


def read(dialect: str, name: str) -> tuple[Completion, Completion]:
    reader = DIALECTS[dialect]
    whole = reader.completion_from_json((FIXTURES / dialect / f"{name}.json").read_bytes(), 200)
    assembler = reader.assembler()
    assembler.feed((FIXTURES / dialect / f"{name}.sse").read_bytes())
    return whole, assembler.finish(200)


def what_was_said(completion: Completion) -> bytes:
    """Text, tool calls (arguments as parsed JSON; ids are each provider's own), finish reason."""
    calls = [(call.name, orjson.loads(call.arguments)) for call in completion.tool_calls]
    said = [completion.text, calls, completion.finish_reason, completion.error]
    return orjson.dumps(said, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("answer", sorted(SAME_ANSWERS))
def test_every_dialect_reads_the_same_answer_the_same_way(answer: str) -> None:
    said = {
        what_was_said(completion)
        for dialect, name in SAME_ANSWERS[answer].items()
        for completion in read(dialect, name)
    }
    assert len(said) == 1, said
    _, _, finish, error = orjson.loads(said.pop())
    assert error is None and finish in ("stop", "tool_calls", "length")


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (FIXTURES / "openai-chat").glob("*.*") if p.name != "error.json")
)
def test_chat_fixtures_have_the_sdk_shape(name: str) -> None:
    body = (FIXTURES / "openai-chat" / name).read_bytes()
    if name.endswith(".json"):
        conforms(ChatCompletion, orjson.loads(body))
        return
    events = SSEDecoder().feed(body)
    assert events[-1].data == b"[DONE]"
    for event in events[:-1]:
        conforms(ChatCompletionChunk, orjson.loads(event.data))


def test_token_usage_is_counted_alike() -> None:
    chat, anthropic, responses = (read(d, "text")[0] for d in SAME_ANSWERS["plain text"])
    for completion in (chat, anthropic, responses):
        assert (completion.prompt_tokens, completion.completion_tokens) == (25, 9)
    assert anthropic.cached_tokens == responses.cached_tokens == 4


@pytest.mark.parametrize("dialect", sorted(SAME_ANSWERS["plain text"]))
def test_every_dialect_reads_its_error_body(dialect: str) -> None:
    body = (FIXTURES / dialect / "error.json").read_bytes()
    message = orjson.loads(body)["error"]["message"]
    for status in (429, 529, 200):  # an error body is an error whatever the status says
        completion = DIALECTS[dialect].completion_from_json(body, status)
        assert (completion.status, completion.error, completion.ok) == (status, message, False)


# Every reader is on the request path: no answer, whatever the dialect, is parsed in one call
# that holds the loop for long (`MAX_JSON_VALUES` values, `MAX_EVENT_BYTES` per event).
HOSTILE = b"[" + b"0," * 60_000 + b"0]"  # 60,001 values in 120 kB: ~3 ms of orjson


@pytest.mark.parametrize("dialect", sorted(SAME_ANSWERS["plain text"]))
def test_no_dialect_parses_an_answer_with_too_many_values(dialect: str) -> None:
    body = b'{"type": "message", "object": "response", "x": ' + HOSTILE + b"}"
    completion = DIALECTS[dialect].completion_from_json(body, 200)
    assert completion.error == "invalid response body: more than 50000 JSON values, not parsed"


@pytest.mark.parametrize("dialect", sorted(SAME_ANSWERS["plain text"]))
def test_no_dialect_parses_a_stream_event_with_too_many_values(dialect: str) -> None:
    name = SAME_ANSWERS["plain text"][dialect]
    stream = (FIXTURES / dialect / f"{name}.sse").read_bytes()
    hostile = b'event: content_block_delta\ndata: {"type": "x", "x": ' + HOSTILE + b"}\n\n"
    huge = b'data: {"x": "' + b"y" * (1 << 20) + b'"}\n\n'
    for bad in (hostile, huge):
        assembler = DIALECTS[dialect].assembler()
        assembler.feed(bad + stream)
        completion = assembler.finish(200)
        assert (completion.error or "").startswith("invalid stream: an event too large to parse")
