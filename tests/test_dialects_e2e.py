"""Every dialect end to end through a running shadowtap, driven by the official SDKs as an
application would: the client's answers are byte-identical to the primary's, each exchange is
recorded with its dialect, and a candidate speaking the same API answers alike and scores 1.0."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
from prometheus_client import CollectorRegistry
from shadowtap.recorder import open_readonly

from tests.conftest import StartShadowtap, make_config
from tests.dialect_fakes import FakeProvider, serve

ROUTES = ["/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings"]
QUESTION = [{"role": "user", "content": "Name a prime."}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
SCORERS = {
    "similarity": {"type": "text_similarity"},
    "tools": {"type": "tool_calls"},
    "vectors": {"type": "embedding_agreement"},
}

Call = Callable[[str], Awaitable[bytes]]


def sdk_calls() -> dict[str, Call]:
    """Each SDK call an application makes, returning the raw bytes it received."""

    def gpt(base: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=base + "/v1", api_key="sk-client-openai", max_retries=0)

    def claude(base: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=base, api_key="sk-ant-client", max_retries=0)

    async def chat(base: str) -> bytes:
        raw = await gpt(base).chat.completions.with_raw_response.create(
            model="gpt-x",
            messages=QUESTION,  # type: ignore[arg-type]
        )
        assert raw.parse().choices[0].message.content
        return raw.content

    async def chat_stream(base: str) -> bytes:
        async with gpt(base).chat.completions.with_streaming_response.create(
            model="gpt-x",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
        ) as response:
            return await response.read()

    async def responses(base: str) -> bytes:
        raw = await gpt(base).responses.with_raw_response.create(model="gpt-x", input="Hi there")
        assert raw.parse().output_text
        return raw.content

    async def responses_stream(base: str) -> bytes:
        stream = await gpt(base).responses.create(model="gpt-x", input="Hi there", stream=True)
        kinds = [event.type async for event in stream]
        assert kinds[-1] == "response.completed"
        async with gpt(base).responses.with_streaming_response.create(
            model="gpt-x", input="Hi there", stream=True
        ) as response:
            return await response.read()

    async def messages(base: str) -> bytes:
        raw = await claude(base).messages.with_raw_response.create(
            model="claude-x",
            max_tokens=256,
            system="Be brief.",
            messages=QUESTION,  # type: ignore[arg-type]
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        assert (await raw.parse()).stop_reason == "tool_use"
        return await raw.read()

    async def messages_stream(base: str) -> bytes:
        async with claude(base).messages.stream(
            model="claude-x",
            max_tokens=256,
            messages=QUESTION,  # type: ignore[arg-type]
        ) as stream:
            assert await stream.get_final_text()
        async with claude(base).messages.with_streaming_response.create(
            model="claude-x",
            max_tokens=256,
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
        ) as response:
            return await response.read()

    async def embeddings(base: str) -> bytes:
        raw = await gpt(base).embeddings.with_raw_response.create(
            model="emb-x", input=["alpha", "beta", "gamma"]
        )
        assert len(raw.parse().data) == 3
        return raw.content

    return {
        "chat": chat,
        "chat_stream": chat_stream,
        "responses": responses,
        "responses_stream": responses_stream,
        "messages": messages,
        "messages_stream": messages_stream,
        "embeddings": embeddings,
    }


async def test_every_dialect_is_transparent_recorded_and_scored(
    start_shadowtap: StartShadowtap, aiohttp_server: Any, tmp_path: Path
) -> None:
    primary = await serve(aiohttp_server, FakeProvider())
    same = await serve(aiohttp_server, FakeProvider())
    db = tmp_path / "shadowtap.duckdb"
    config = make_config(
        primary.url,
        {"same": {"url": same.url, "api_key": "sk-candidate-same"}},
        sampling={"routes": ROUTES},
        scorers=SCORERS,
        storage={"enabled": True, "path": str(db), "bodies": "full", "flush_interval_ms": 50},
    )
    registry = CollectorRegistry()
    server = await start_shadowtap(config, registry)
    proxy = f"http://127.0.0.1:{server.proxy_port}"
    for name, call in sdk_calls().items():
        assert await call(proxy) == await call(primary.url), name  # byte for byte
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)
    await server.stop()

    con = open_readonly(db)
    try:
        dialects = con.execute(
            "SELECT path, dialect, count(*) FROM exchanges GROUP BY ALL ORDER BY path"
        ).fetchall()
        answers = con.execute(
            "SELECT e.path, r.target, r.status, r.error, r.text IS NOT NULL, r.tool_calls"
            " FROM responses r JOIN exchanges e USING (request_id)"
        ).fetchall()
        scores = con.execute(
            "SELECT e.path, s.scorer, s.score FROM scores s JOIN exchanges e USING (request_id)"
            " WHERE s.target = 'same'"
        ).fetchall()
    finally:
        con.close()
    # Responses and Anthropic streams are asked twice (parsed by the SDK, then read raw).
    assert dialects == [
        ("/v1/chat/completions", "openai-chat", 2),
        ("/v1/embeddings", "openai-embeddings", 1),
        ("/v1/messages", "anthropic-messages", 3),
        ("/v1/responses", "openai-responses", 3),
    ]
    assert all(status == 200 and error is None for _, _, status, error, _, _ in answers), answers
    by_scorer: dict[tuple[str, str], set[float | None]] = {}
    for path, scorer, score in scores:
        by_scorer.setdefault((path, scorer), set()).add(score)
    assert by_scorer[("/v1/embeddings", "vectors")] == {1.0}
    assert by_scorer[("/v1/embeddings", "similarity")] == {None}  # no text to compare
    for path in ROUTES[:3]:
        assert by_scorer[(path, "similarity")] <= {1.0, None}
        assert 1.0 in by_scorer[(path, "similarity")] | by_scorer[(path, "tools")], path
        assert by_scorer[(path, "vectors")] == {None}
    # The Anthropic tool call was read on both sides and matched.
    assert by_scorer[("/v1/messages", "tools")] >= {1.0}

    # Each target got its own key in its API's header; the client's key went nowhere else.
    for sent in same.received:
        assert "sk-client-openai" not in str(sent.headers) and "sk-ant-client" not in str(
            sent.headers
        )
    keys = {
        (r.path_qs, r.headers.get("Authorization") or r.headers.get("x-api-key"))
        for r in same.received
    }
    assert keys == {
        ("/v1/chat/completions", "Bearer sk-candidate-same"),
        ("/v1/responses", "Bearer sk-candidate-same"),
        ("/v1/messages", "sk-candidate-same"),  # Anthropic's way: x-api-key
        ("/v1/embeddings", "Bearer sk-candidate-same"),
    }, keys
    assert all(r.headers["anthropic-version"] for r in same.requests("/v1/messages"))
