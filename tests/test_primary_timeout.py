"""`primary.timeout_s`: a primary that does not answer in time gets the client the proxy's own
504 in OpenAI's error shape, and one that stalls mid-stream past it gets the client a cut
answer, never a silently shortened one. Real fakes on loopback, the official `openai` client
and raw HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import CHAT

TIMEOUT_S = 0.5


async def test_a_primary_that_never_answers_gets_the_client_a_504_and_the_shadow_still_runs(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake("hang"), await start_fake()
    config = make_config(primary, {"small": candidate})
    config["primary"]["timeout_s"] = TIMEOUT_S
    server = await start_shadowtap(config)
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.proxy_port}/v1", api_key="sk-test", max_retries=0
    )
    with pytest.raises(openai.APIStatusError) as raised:
        await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    await client.close()
    assert raised.value.status_code == 504
    body: Any = raised.value.body
    assert body["code"] == "upstream_timeout" and body["type"] == "proxy_error"
    await server.shadow_tasks.wait(10)
    assert len(candidate.chat_requests()) == 1  # the candidate was asked all the same


async def stalling_primary(request: web.Request) -> web.StreamResponse:
    """Two SSE events, then nothing, for ever."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(2):
        chunk = {"choices": [{"index": 0, "delta": {"content": f"part{i} "}}]}
        await response.write(b"data: " + str(chunk).replace("'", '"').encode() + b"\n\n")
    await asyncio.sleep(3600)
    return response


async def test_a_primary_stalling_mid_stream_past_the_timeout_cuts_the_clients_answer(
    aiohttp_server: Any, start_shadowtap: StartShadowtap
) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", stalling_primary)
    primary = await aiohttp_server(app)
    config = make_config(str(primary.make_url("")).rstrip("/"), sampling={"rate": 0.0})
    config["primary"]["timeout_s"] = TIMEOUT_S
    server = await start_shadowtap(config)
    url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
    received = b""
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={**CHAT, "stream": True}) as response:
            assert response.status == 200  # the primary had answered: its status stands
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in response.content.iter_any():
                    received += chunk
    assert b"part0" in received and b"part1" in received  # relayed as they came, then cut
    assert b"[DONE]" not in received
