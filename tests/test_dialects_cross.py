"""Candidates on another provider's API, end to end: the primary's request is translated (the
fake candidates record what they received, so its shape is asserted), their answers are read
in their own API, the same underlying answer scores 1.0, and a request with no faithful
translation is recorded as skipped with the reason, never sent as a different question."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
from prometheus_client import CollectorRegistry
from shadowtap.config import GatesConfig
from shadowtap.recorder import open_readonly
from shadowtap.report.build import build_report

from tests.conftest import StartShadowtap, make_config
from tests.dialect_fakes import TOOL_ARGUMENTS, FakeProvider, serve

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER},
}
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    {"role": "user", "content": "And should I take a coat?"},
]
SCORERS = {"similarity": {"type": "text_similarity"}, "tools": {"type": "tool_calls"}}


def storage(tmp_path: Path) -> dict[str, Any]:
    path = str(tmp_path / "shadowtap.duckdb")
    return {"enabled": True, "path": path, "bodies": "full", "flush_interval_ms": 50}


def read_db(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = open_readonly(tmp_path / "shadowtap.duckdb")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def finish(server: Any) -> None:
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)
    await server.stop()


async def test_an_openai_chat_primary_with_anthropic_and_responses_candidates(
    start_shadowtap: StartShadowtap, aiohttp_server: Any, tmp_path: Path
) -> None:
    primary = await serve(aiohttp_server, FakeProvider())
    claude = await serve(aiohttp_server, FakeProvider())
    responses = await serve(aiohttp_server, FakeProvider())
    candidates = {
        "claude": {
            "url": claude.url,
            "model": "claude-x",
            "dialect": "anthropic-messages",
            "api_key": "sk-ant-candidate-key",
            "max_tokens": 777,
        },
        "resp": {
            "url": responses.url,
            "model": "gpt-resp",
            "dialect": "openai-responses",
            "api_key": "sk-resp-candidate-key",
        },
    }
    registry = CollectorRegistry()
    config = make_config(primary.url, candidates, scorers=SCORERS, storage=storage(tmp_path))
    server = await start_shadowtap(config, registry)
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.proxy_port}/v1",
        api_key="sk-client-openai-key",
        max_retries=0,
    )
    history = await client.chat.completions.create(
        model="gpt-4o",
        messages=HISTORY,  # type: ignore[arg-type]
        tools=[CHAT_TOOL],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=300,
        temperature=0.2,
    )
    plain = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Name a prime."}],
        stream=True,
    )
    streamed = [chunk async for chunk in plain]
    called = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[CHAT_TOOL],  # type: ignore[list-item]
    )
    two = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Two answers."}], n=2
    )
    await client.close()
    assert history.choices[0].message.content and streamed and two.choices
    assert called.choices[0].message.tool_calls
    await finish(server)

    # The Anthropic candidate got the question in its API: system apart, tool use and result
    # as content blocks, the client's cap kept (the configured one only where none was set).
    first, second, third = (r.json for r in claude.requests("/v1/messages"))
    assert first["model"] == "claude-x" and first["system"] == "Be brief."
    assert first["max_tokens"] == 300 and first["temperature"] == 0.2
    assert first["tools"] == [
        {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER}
    ]
    assert first["tool_choice"] == {"type": "none"}
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "user"] or [
        m["role"] for m in first["messages"]
    ] == ["user", "assistant", "user"]
    tool_use = first["messages"][1]["content"][0]
    assert tool_use == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    tool_result = first["messages"][2]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == "call_1"
    assert second["max_tokens"] == 777 and second["stream"] is True
    assert third["tools"][0]["name"] == "get_weather"
    assert len(claude.received) == 3  # n=2 was not sent

    # The Responses candidate: instructions, items for the call and its output, its own cap.
    r_first, r_second, _ = (r.json for r in responses.requests("/v1/responses"))
    assert r_first["model"] == "gpt-resp" and r_first["max_output_tokens"] == 300
    kinds = [item.get("type", item.get("role")) for item in r_first["input"]]
    assert "function_call" in kinds and "function_call_output" in kinds
    assert (
        r_first["tools"][0]["name"] == "get_weather" and r_first["tools"][0]["type"] == "function"
    )
    assert r_second["stream"] is True
    assert len(responses.received) == 3

    # Each candidate's own key, in its API's header; never the client's.
    for sent in claude.received:
        assert sent.headers["x-api-key"] == "sk-ant-candidate-key"
        assert sent.headers["anthropic-version"] and "Authorization" not in sent.headers
    for sent in responses.received:
        assert sent.headers["Authorization"] == "Bearer sk-resp-candidate-key"
    every = str([dict(r.headers) for r in claude.received + responses.received])
    assert "sk-client-openai-key" not in every

    # Same underlying answers score 1.0, read in each candidate's own API.
    scores = read_db(
        tmp_path,
        "SELECT s.target, s.scorer, s.score, e.request_body"
        " FROM scores s JOIN exchanges e USING (request_id)",
    )
    for target in ("claude", "resp"):
        similar = [s for t, scorer, s, _ in scores if t == target and scorer == "similarity"]
        tools = [s for t, scorer, s, _ in scores if t == target and scorer == "tools"]
        # The history and the plain question agree in text; the tool call in its arguments.
        assert similar.count(1.0) == 2 and set(similar) <= {1.0, None}, (target, similar)
        assert tools.count(1.0) >= 1 and set(tools) <= {1.0, None}, (target, tools)

    # n=2: recorded as skipped with the reason, counted, and not a candidate error.
    skipped = read_db(
        tmp_path,
        "SELECT r.target, r.status, r.error FROM responses r JOIN exchanges e USING (request_id)"
        " WHERE e.request_body LIKE '%Two answers%' AND r.target <> 'primary'",
    )
    assert sorted(skipped) == [
        ("claude", None, "not sent: field 'n' has no faithful translation"),
        ("resp", None, "not sent: field 'n' has no faithful translation"),
    ]
    for target in ("claude", "resp"):
        labels = {"target": target, "outcome": "skipped"}
        assert registry.get_sample_value("shadowtap_shadow_requests_total", labels) == 1
    # The report leaves the unsent request out of the candidates' pairs, and says so.
    report = build_report(tmp_path / "shadowtap.duckdb", GatesConfig(min_pairs=2))
    for target in ("claude", "resp"):
        judged = report.candidates[target]
        assert judged.pairs == 3 and judged.error_rate.estimate == 0.0
        assert judged.notes == [
            f"1 requests were not sent to {target} (no faithful translation into its API;"
            " responses.error says why) and are not part of its pairs."
        ]
    # Nothing secret in the database.
    stored = str(read_db(tmp_path, "SELECT * FROM responses")) + str(
        read_db(tmp_path, "SELECT * FROM exchanges")
    )
    for secret in ("sk-client-openai-key", "sk-ant-candidate-key", "sk-resp-candidate-key"):
        assert secret not in stored


async def test_an_anthropic_primary_with_an_openai_chat_candidate(
    start_shadowtap: StartShadowtap, aiohttp_server: Any, tmp_path: Path
) -> None:
    primary = await serve(aiohttp_server, FakeProvider())
    gpt = await serve(aiohttp_server, FakeProvider())
    candidates = {
        "gpt": {
            "url": gpt.url,
            "model": "gpt-x",
            "dialect": "openai-chat",
            "api_key": "sk-gpt-candidate-key",
        }
    }
    config = make_config(
        primary.url,
        candidates,
        sampling={"routes": ["/v1/messages"]},
        scorers=SCORERS,
        storage=storage(tmp_path),
    )
    server = await start_shadowtap(config)
    claude = anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{server.proxy_port}",
        api_key="sk-ant-client-key",
        max_retries=0,
    )
    tool = {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER}
    created = await claude.messages.create(
        model="claude-x",
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[tool],  # type: ignore[list-item]
    )
    async with claude.messages.stream(
        model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "Name a prime."}]
    ) as stream:
        text = await stream.get_final_text()
    await claude.close()
    assert created.stop_reason == "tool_use" and text
    await finish(server)

    asked, streamed = (r.json for r in gpt.requests("/v1/chat/completions"))
    assert asked["model"] == "gpt-x" and asked["max_completion_tokens"] == 200
    assert asked["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    assert asked["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER},
        }
    ]
    assert streamed["stream"] is True and streamed["max_completion_tokens"] == 64
    for sent in gpt.received:
        assert sent.headers["Authorization"] == "Bearer sk-gpt-candidate-key"
        assert "x-api-key" not in sent.headers and "anthropic-version" not in sent.headers

    scores = read_db(tmp_path, "SELECT scorer, score FROM scores WHERE target = 'gpt'")
    assert ("tools", 1.0) in scores and ("similarity", 1.0) in scores, scores
    assert all(score in (1.0, None) for _, score in scores), scores
