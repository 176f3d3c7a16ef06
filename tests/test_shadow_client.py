"""Live shadows go through the targets' own HTTP/1.1 client (`shadowtap.upstream`): what it
sends a candidate, and that a connection is reused only after an answer read whole."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import CHAT, RecordingSink, drain

ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "7"}}],
}


class Candidate:
    """A candidate that notes each request's connection; `endless` first answers never end."""

    def __init__(self, endless: int = 0) -> None:
        self.endless = endless
        self.peers: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        self.headers.append(dict(request.headers))
        self.peers.append(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        if len(self.peers) <= self.endless:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 10**9  # a body that would never end
            await response.prepare(request)
            try:
                while True:
                    await response.write(b" " * 65536)
            except (ConnectionResetError, RuntimeError):
                return response
        return web.json_response(ANSWER)


async def start_candidate(aiohttp_server: Any, candidate: Candidate) -> str:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", candidate.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def post_raw(port: int, body: bytes, **headers: str) -> int:
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as session:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers=headers
        ) as response:
            await response.read()
            return response.status


async def test_a_body_sent_without_a_type_reaches_the_candidate_as_json(
    aiohttp_server: Any, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), Candidate()
    url = await start_candidate(aiohttp_server, candidate)
    server = await start_shadowtap(make_config(primary, {"c": url}))
    body = orjson.dumps(CHAT)
    assert await post_raw(server.proxy_port, body) == 200
    await drain(server)
    (headers,) = candidate.headers
    assert headers["Content-Type"] == "application/json"  # aiohttp sent octet-stream
    assert candidate.bodies == [body]
    assert "Accept-Encoding" in headers and headers["Content-Length"] == str(len(body))


async def test_a_candidate_connection_is_kept_between_answers(
    aiohttp_server: Any, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), Candidate()
    url = await start_candidate(aiohttp_server, candidate)
    server = await start_shadowtap(make_config(primary, {"c": url}))
    for _ in range(5):
        assert await post_raw(server.proxy_port, orjson.dumps(CHAT)) == 200
        await drain(server)
    assert len(candidate.peers) == 5 and len(set(candidate.peers)) == 1


async def test_an_answer_cut_at_the_cap_closes_its_connection_and_the_next_is_read_whole(
    aiohttp_server: Any, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """The rest of a cut answer is never read as the start of the next request's answer."""
    primary, candidate = await start_fake(), Candidate(endless=1)
    url = await start_candidate(aiohttp_server, candidate)
    config = make_config(primary, {"c": url}, sampling={"max_answer_bytes": 256 * 1024})
    server = await start_shadowtap(config)
    seen: list[Any] = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    for _ in range(50):  # the cut answer's reading leaves the target owing its pace a while
        assert await post_raw(server.proxy_port, orjson.dumps(CHAT)) == 200
        await drain(server)
        if len(seen) == 2:
            break
        await asyncio.sleep(0.1)
    first, second = (exchange.results["c"].completion for exchange in seen)
    assert first.error and not first.ok
    assert second.ok and second.text == "7"
    assert candidate.peers[0] != candidate.peers[1]  # a new connection for the second


UNRESOLVABLE = "http://" + "x" * 70 + ".invalid:9"  # a label IDNA refuses: over 63 characters


async def test_a_target_whose_host_name_cannot_be_encoded_fails_its_calls_not_the_start(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary, {"c": UNRESOLVABLE}))
    seen: list[Any] = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    assert await post_raw(server.proxy_port, orjson.dumps(CHAT)) == 200
    await drain(server)
    (exchange,) = seen
    assert exchange.primary.ok
    assert "UnicodeError" in (exchange.results["c"].completion.error or "")


async def test_a_primary_whose_host_name_cannot_be_encoded_is_a_502(
    start_shadowtap: StartShadowtap,
) -> None:
    server = await start_shadowtap(make_config(UNRESOLVABLE))
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
        async with session.post(url, json=CHAT) as response:
            assert response.status == 502
            error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable" and "UnicodeError" in error["message"]
