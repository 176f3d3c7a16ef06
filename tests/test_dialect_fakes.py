"""The fake provider is only evidence if the official SDKs read it as they read the real APIs:
its answers are checked against the SDKs' own types and driven by the SDK clients."""

from __future__ import annotations

import base64
import struct
from typing import Any

import anthropic
import openai
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from shadowtap.dialects import DIALECTS
from shadowtap.sse import SSEDecoder

from tests.dialect_fakes import (
    TOOL_ARGUMENTS,
    FakeProvider,
    Said,
    anthropic_events,
    anthropic_json,
    chat_events,
    chat_json,
    responses_events,
    responses_json,
    serve,
    vector,
)
from tests.sdk_shapes import conforms

SAID = [Said("The answer is forty-two.", None), Said(None, "get_weather")]
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.mark.parametrize("said", SAID)
def test_every_answer_has_the_sdk_shape_and_reads_back(said: Said) -> None:
    shapes = [
        ("openai-chat", chat_json, chat_events, ChatCompletion, ChatCompletionChunk),
        ("anthropic-messages", anthropic_json, anthropic_events, Message, RawMessageStreamEvent),
        ("openai-responses", responses_json, responses_events, Response, ResponseStreamEvent),
    ]
    for dialect, whole, events, whole_type, event_type in shapes:
        body = whole(said, "m", b"{}")
        conforms(whole_type, body)
        stream = events(said, "m", b"{}")
        for event in SSEDecoder().feed(b"".join(stream)):
            if event.data != b"[DONE]" and event.event != "ping":  # the SDK skips pings
                conforms(event_type, orjson.loads(event.data))
        read = DIALECTS[dialect]
        assembler = read.assembler()
        assembler.feed(b"".join(stream))
        for completion in (
            read.completion_from_json(orjson.dumps(body), 200),
            assembler.finish(200),
        ):
            assert completion.ok, (dialect, completion.error)
            assert completion.text == said.text or (said.text is None and not completion.text)
            calls = [(call.name, call.arguments) for call in completion.tool_calls]
            assert calls == ([(said.tool, TOOL_ARGUMENTS)] if said.tool else []), dialect


async def test_the_sdks_read_the_fake_as_a_provider(aiohttp_server: Any) -> None:
    provider = await serve(aiohttp_server, FakeProvider())
    claude = anthropic.AsyncAnthropic(base_url=provider.url, api_key="sk-ant-test")
    gpt = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="sk-test")
    question = [{"role": "user", "content": "Name a prime."}]
    expected = "The answer to 'Name a prime.' is forty-two, as computed carefully."

    message = await claude.messages.create(model="claude-x", max_tokens=64, messages=question)
    assert message.content[0].type == "text" and message.content[0].text == expected
    async with claude.messages.stream(model="claude-x", max_tokens=64, messages=question) as s:
        assert await s.get_final_text() == expected
    tool = {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER}
    called = await claude.messages.create(
        model="claude-x", max_tokens=64, messages=question, tools=[tool]
    )
    assert called.stop_reason == "tool_use" and called.content[0].type == "tool_use"
    assert called.content[0].input == orjson.loads(TOOL_ARGUMENTS)

    response = await gpt.responses.create(model="gpt-x", input="Name a prime.")
    assert response.output_text == expected
    streamed = await gpt.responses.create(model="gpt-x", input="Name a prime.", stream=True)
    deltas = [event.delta async for event in streamed if event.type == "response.output_text.delta"]
    assert "".join(deltas) == expected

    chat = await gpt.chat.completions.create(model="gpt-x", messages=question)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == expected

    embedded = await gpt.embeddings.create(model="emb-x", input=["a", "b"])  # base64 by default
    assert [e.index for e in embedded.data] == [0, 1]
    assert embedded.data[1].embedding == pytest.approx(vector("b"), abs=1e-6)
    [sent] = provider.requests("/v1/embeddings")
    assert sent.json["encoding_format"] == "base64"
    assert sent.headers["Authorization"] == "Bearer sk-test"
    # This SDK sends its key as a bearer token (older ones: `x-api-key`), with the version.
    [asked, *_] = provider.requests("/v1/messages")
    key = asked.headers.get("x-api-key") or asked.headers["Authorization"].removeprefix("Bearer ")
    assert key == "sk-ant-test" and asked.headers["anthropic-version"]
    await claude.close()
    await gpt.close()


def test_a_base64_vector_is_little_endian_float32() -> None:
    from tests.dialect_fakes import embeddings_json

    body = embeddings_json({"input": "a", "encoding_format": "base64"}, "m")
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert list(struct.unpack("<8f", raw)) == pytest.approx(vector("a"), abs=1e-6)
