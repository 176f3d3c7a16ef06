"""Through the proxy, the attacks on a candidate's model replaced in the client's bytes: what
the candidate reads is the client's request with only `model` changed, sent once, never to
where the candidate redirects it."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import drain

CHAT_PATH = "/v1/chat/completions"
MAX_BODY = 4096


async def send(base: str, body: bytes) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(base + CHAT_PATH, data=body) as response:
            return response.status, await response.read()


def at_max_body_bytes(head: bytes) -> bytes:
    """`head` (an object's members after its `{`) padded to exactly MAX_BODY bytes."""
    shell = b' \n{ "pad": "", ' + head + b"}\n "
    return shell.replace(b'"pad": ""', b'"pad": "' + b"p" * (MAX_BODY - len(shell)) + b'"')


async def test_duplicate_escaped_and_nested_models_at_the_size_limit_only_the_model_changes(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, small = await start_fake(), await start_fake()
    registry = CollectorRegistry()
    config = make_config(
        primary,
        {"small": {"url": small.url, "model": "llama-3.1-8b"}},
        sampling={"max_body_bytes": MAX_BODY},
    )
    server = await start_shadowtap(config, registry)
    body = at_max_body_bytes(
        b'"model": "a", "messages": [{"role": "user", "content": "say \\"model\\": 1"}],'
        b' "metadata": {"model": "kept"}, "mod\\u0065l" : ["b"], "n": 12345678901234567890123,'
        b' "\\u006dodel": null'
    )
    assert len(body) == MAX_BODY
    proxied = await send(f"http://127.0.0.1:{server.proxy_port}", body)
    assert proxied == await send(primary.url, body)
    await drain(server)
    assert primary.chat_requests()[0].body == body
    sent = small.chat_requests()[0]
    # Read by a parser that keeps big integers: the client's digits, not a float's.
    assert json.loads(sent.body) == {**json.loads(body), "model": "llama-3.1-8b"}
    assert int(sent.headers["Content-Length"]) == len(sent.body)
    labels = {"route": CHAT_PATH, "outcome": "sampled"}
    assert registry.get_sample_value("shadowtap_sampling_decisions_total", labels) == 1


async def test_a_candidate_that_redirects_is_not_followed_and_its_body_not_sent_again(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any
) -> None:
    """A 307 asks for the same body again, elsewhere: the candidate's answer (an error), never
    a second request, whether its body is the client's bytes or streamed around a new model
    (which aiohttp could not send twice)."""
    primary, elsewhere = await start_fake(), await start_fake()
    redirected: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        redirected.append(await request.read())
        return web.Response(status=307, headers={"Location": elsewhere.url + CHAT_PATH})

    app = web.Application()
    app.router.add_post(CHAT_PATH, handler)
    url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    registry = CollectorRegistry()
    moved = {"moved": {"url": url, "model": "llama-3.1-8b"}, "moved-as-sent": {"url": url}}
    server = await start_shadowtap(make_config(primary, moved), registry)
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    proxied = await send(f"http://127.0.0.1:{server.proxy_port}", body)
    assert proxied == await send(primary.url, body)
    await drain(server)
    assert sorted(redirected) == sorted([body, body.replace(b"gpt-4o", b"llama-3.1-8b")])
    assert elsewhere.received == []
    for target in moved:
        labels = {"target": target, "outcome": "error"}
        assert registry.get_sample_value("shadowtap_shadow_requests_total", labels) == 1
