"""A target's header plan (headers.ShadowHeaders, kept per target and API since add218c) never
carries one target's key or headers to another, nor one request's headers to the next, and a
client's credentials in any casing stay with the primary. Real shadowtap, fake providers on
loopback, raw aiohttp requests (to choose the header casing)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from tests.conftest import StartShadowtap, make_config
from tests.dialect_fakes import FakeProvider, serve

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Name a prime."}]}
CLIENT_SECRETS = [
    "sk-client-AUTH-0001",
    "sk-client-APIKEY-02",
    "sk-client-XAPI-0003",
    "c00kie-v4lue",
]


async def test_two_targets_two_apis_and_credentials_in_odd_casing(
    start_shadowtap: StartShadowtap, aiohttp_server: Any
) -> None:
    primary = await serve(aiohttp_server, FakeProvider())
    same = await serve(aiohttp_server, FakeProvider())
    claude = await serve(aiohttp_server, FakeProvider())
    keyless = await serve(aiohttp_server, FakeProvider())
    candidates = {
        "same": {"url": same.url, "api_key": "sk-same-target-key", "headers": {"X-Team": "a"}},
        "claude": {
            "url": claude.url,
            "model": "claude-x",
            "dialect": "anthropic-messages",
            "api_key": "sk-claude-target-key",
            "headers": {"X-Claude-Only": "c"},
        },
        "keyless": {"url": keyless.url},
    }
    server = await start_shadowtap(make_config(primary.url, candidates))
    url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        for i in range(3):
            headers = {
                "AUTHORIZATION": f"Bearer {CLIENT_SECRETS[0]}",
                "Api-Key": CLIENT_SECRETS[1],
                "X-API-KEY": CLIENT_SECRETS[2],
                "COOKIE": f"s={CLIENT_SECRETS[3]}",
                "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0LXZhbHVl",
                "OpenAI-Organization": "org-client",
                "Anthropic-Version": "1999-01-01",
                "X-Request-Number": str(i),
                "Content-Type": "application/json",
            }
            body = orjson.dumps({**CHAT, "user": f"u{i}"})
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 200
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)
    sent = {
        "same": same.requests("/v1/chat/completions"),
        "claude": claude.requests("/v1/messages"),
        "keyless": keyless.requests("/v1/chat/completions"),
    }
    assert [len(requests) for requests in sent.values()] == [3, 3, 3]
    for name, requests in sent.items():
        for request in requests:
            text = str(request.headers).lower()
            for secret in [*CLIENT_SECRETS, "cHJveHk6c2VjcmV0LXZhbHVl", "org-client"]:
                assert secret.lower() not in text, (name, secret)
            assert "x-request-number" not in text
            if name != "same":
                assert "sk-same-target-key" not in text and "x-team" not in text
            if name != "claude":
                assert "sk-claude-target-key" not in text and "x-claude-only" not in text
    lower = [{k.lower(): v for k, v in r.headers.items()} for r in sent["same"]]
    assert all(h["authorization"] == "Bearer sk-same-target-key" for h in lower)
    assert all(h.get("anthropic-version") == "1999-01-01" for h in lower)  # same API: passed
    lower = [{k.lower(): v for k, v in r.headers.items()} for r in sent["claude"]]
    assert all(h["x-api-key"] == "sk-claude-target-key" for h in lower)
    assert all(h["anthropic-version"] == "2023-06-01" for h in lower)  # translated: its own
    assert all("authorization" not in h for h in lower)
    lower = [{k.lower(): v for k, v in r.headers.items()} for r in sent["keyless"]]
    assert all("authorization" not in h and "x-api-key" not in h for h in lower)
