"""The simulated models answer the official `openai` client correctly in every mode."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest
from shadowtap.demo import prompts
from shadowtap.demo.answers import Style
from shadowtap.demo.models import build_app
from shadowtap.demo.profiles import PROFILES

OpenClient = Callable[..., Awaitable[openai.AsyncOpenAI]]
CHAT = [{"role": "user", "content": "Explain connection pooling in PostgreSQL to a new engineer."}]
WEATHER = [{"role": "user", "content": "What's the weather in Lisbon this weekend?"}]
# The primary without its run-to-run noise: streamed and plain answers must then be identical.
STEADY = dataclasses.replace(PROFILES["primary"], style=Style())


@pytest.fixture
async def client(aiohttp_server: Any) -> AsyncIterator[OpenClient]:
    clients: list[openai.AsyncOpenAI] = []

    async def open_client(profile: Any = STEADY, **options: Any) -> openai.AsyncOpenAI:
        server = await aiohttp_server(build_app(profile, speed=1000, seed=7))
        made = openai.AsyncOpenAI(
            base_url=str(server.make_url("/v1")), api_key="demo-key", max_retries=0, **options
        )
        clients.append(made)
        return made

    yield open_client
    for made in clients:
        await made.close()


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_chat_answer_is_plausible_and_counted(client: OpenClient) -> None:
    api = await client()
    response = await api.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    choice = response.choices[0]
    assert response.object == "chat.completion"
    assert response.model == "gpt-4o-mini"  # echoes what was asked, as providers do
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.count(".") >= 3
    assert "postgresql" in choice.message.content.lower()  # on topic: built from the prompt
    assert response.usage is not None
    assert response.usage.prompt_tokens > 5
    assert response.usage.completion_tokens > 20
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


async def test_stream_has_role_chunk_pieces_usage_and_the_same_text(client: OpenClient) -> None:
    api = await client()
    plain = await api.chat.completions.create(model="m", messages=CHAT)
    chunks = await collect(
        await api.chat.completions.create(
            model="m", messages=CHAT, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert len([p for p in pieces if p]) > 10  # realistic chunking, not one blob
    assert "".join(p or "" for p in pieces) == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])


async def test_raw_sse_ends_with_done_and_omits_usage_unless_asked(aiohttp_server: Any) -> None:
    server = await aiohttp_server(build_app(STEADY, speed=1000))
    body = {"model": "m", "messages": CHAT, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/v1/chat/completions"), json=body) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = (await response.read()).decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert all("usage" not in json.loads(e[6:]) for e in events[:-1])


async def test_tool_call_plain_and_streamed_in_fragments(client: OpenClient) -> None:
    api = await client()
    plain = await api.chat.completions.create(model="m", messages=WEATHER, tools=prompts.TOOLS)
    assert plain.choices[0].finish_reason == "tool_calls"
    (call,) = plain.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert args["city"] == "Lisbon" and args["unit"] in ("celsius", "fahrenheit")

    chunks = await collect(
        await api.chat.completions.create(
            model="m", messages=WEATHER, tools=prompts.TOOLS, stream=True
        )
    )
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == call.id and calls[0].function.name == "get_weather"
    fragments = [tc.function.arguments for tc in calls[1:]]
    assert len(fragments) > 2  # arguments arrive in pieces, as OpenAI streams them
    assert "".join(fragments) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_forced_and_disabled_tool_choice(client: OpenClient) -> None:
    api = await client()
    forced = await api.chat.completions.create(
        model="m",
        messages=CHAT,
        tools=prompts.TOOLS,
        tool_choice={"type": "function", "function": {"name": "search_docs"}},
    )
    (call,) = forced.choices[0].message.tool_calls or []
    assert call.function.name == "search_docs"
    assert json.loads(call.function.arguments)["query"]
    none = await api.chat.completions.create(
        model="m", messages=WEATHER, tools=prompts.TOOLS, tool_choice="none"
    )
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


async def test_tool_result_follow_up_is_prose_about_the_result(client: OpenClient) -> None:
    api = await client()
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    messages = [
        {"role": "user", "content": "Do I need a jacket in Oslo today?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 4}'},
    ]
    response = await api.chat.completions.create(
        model="m",
        messages=messages,
        tools=prompts.TOOLS,  # type: ignore[arg-type]
    )
    assert response.choices[0].finish_reason == "stop"
    assert "temperature_c is 4" in (response.choices[0].message.content or "")


async def test_json_object_mode_answers_the_keys_asked_for(client: OpenClient) -> None:
    api = await client()
    kwargs = prompts._ticket_json(random.Random(3))
    response = await api.chat.completions.create(model="m", **kwargs)
    data = json.loads(response.choices[0].message.content or "")
    assert set(data) == {"category", "priority", "summary"}
    assert data["priority"] in ("low", "medium", "high")


async def test_json_schema_mode_validates_against_the_schema(client: OpenClient) -> None:
    api = await client()
    for review in prompts.REVIEWS:
        response = await api.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": f"Extract the review details: {review}"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "review", "schema": prompts.REVIEW_SCHEMA},
            },
        )
        data = json.loads(response.choices[0].message.content or "")
        jsonschema.validate(data, prompts.REVIEW_SCHEMA)


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: OpenClient) -> None:
    api = await client()
    response = await api.chat.completions.create(model="m", messages=CHAT, max_tokens=10)
    assert response.choices[0].finish_reason == "length"
    assert len((response.choices[0].message.content or "").split()) <= 10


async def test_models_list_and_bad_requests(client: OpenClient) -> None:
    api = await client(PROFILES["fast-agree"])
    models = await api.models.list()
    assert [m.id for m in models.data] == ["fast-agree"]
    with pytest.raises(openai.BadRequestError):
        await api.chat.completions.create(model="m", messages=[])


async def test_every_generated_request_is_answered(client: OpenClient) -> None:
    """The whole traffic catalogue round-trips through the official client."""
    api = await client(PROFILES["primary"])
    rng = random.Random(11)
    for i in range(30):
        kwargs = prompts.request(i, rng)
        if kwargs.get("stream"):
            assert await collect(await api.chat.completions.create(**kwargs))
        else:
            response = await api.chat.completions.create(**kwargs)
            message = response.choices[0].message
            assert message.content or message.tool_calls


async def test_the_anthropic_face_answers_the_same_question_alike(
    client: OpenClient, aiohttp_server: Any
) -> None:
    """A simulated model asked through Anthropic's Messages API starts from the same answer
    as through chat: the demo's cross-provider candidate differs only by its API."""
    import anthropic

    chat = await client()
    server = await aiohttp_server(build_app(STEADY, speed=1000, seed=7))
    claude = anthropic.AsyncAnthropic(base_url=str(server.make_url("")), api_key="k", max_retries=0)
    system = "You are terse."
    asked = await chat.chat.completions.create(
        model="m",
        messages=[{"role": "system", "content": system}, *CHAT],  # type: ignore[list-item]
    )
    message = await claude.messages.create(
        model="m",
        max_tokens=4096,
        system=system,
        messages=CHAT,  # type: ignore[arg-type]
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == asked.choices[0].message.content
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 20
    async with claude.messages.stream(model="m", max_tokens=4096, messages=CHAT) as stream:  # type: ignore[arg-type]
        assert (await stream.get_final_text()).count(".") >= 3

    tools = [
        {"name": t["function"]["name"], "description": t["function"]["description"],
         "input_schema": t["function"]["parameters"]}
        for t in prompts.TOOLS
    ]  # fmt: skip
    called = await claude.messages.create(
        model="m",
        max_tokens=4096,
        messages=WEATHER,
        tools=tools,  # type: ignore[arg-type]
    )
    assert called.stop_reason == "tool_use"
    use = next(block for block in called.content if block.type == "tool_use")
    assert use.name == "get_weather" and "Lisbon" in json.dumps(use.input)
    async with claude.messages.stream(
        model="m",
        max_tokens=4096,
        messages=WEATHER,
        tools=tools,  # type: ignore[arg-type]
    ) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["tool_use"] and final.content[0].input == use.input
    await claude.close()
