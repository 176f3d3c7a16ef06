"""A sampled request's shadows wait behind its primary (`PRIMARY_HEAD_START_S`): until the
primary's answer is relayed whole, but never longer than the head start. Both upstreams are raw
HTTP/1.1 servers on loopback that note when each request arrived and when it was answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from shadowtap.shadow import PRIMARY_HEAD_START_S

from tests.conftest import StartShadowtap, make_config
from tests.shadowing import CHAT, drain

ROUTE = "/v1/chat/completions"
ANSWER = orjson.dumps({"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]})


class Timed:
    """An upstream that answers each request after `delay_s`, noting by the request's `user`
    when its head arrived (`arrived`) and when its answer was written (`answered`)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.arrived: dict[str, float] = {}
        self.answered: dict[str, float] = {}
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                user = orjson.loads(await reader.readexactly(length))["user"]
                self.arrived[user] = time.perf_counter()
                await asyncio.sleep(self.delay_s)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
                )
                self.answered[user] = time.perf_counter()
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serving(upstream: Timed) -> asyncio.Server:
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    return server


@pytest.fixture
async def upstreams(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Timed, Timed]]:
    primary, candidate = Timed(request.param), Timed(0)
    servers = [await serving(primary), await serving(candidate)]
    yield primary, candidate
    for server in servers:
        server.close()
        await server.wait_closed()


async def send(port: int, users: list[str]) -> dict[str, float]:
    """Each user's request, one after another; when each was sent."""
    sent = {}
    async with aiohttp.ClientSession() as session:
        for user in users:
            sent[user] = time.perf_counter()
            url = f"http://127.0.0.1:{port}{ROUTE}"
            async with session.post(url, json={**CHAT, "user": user}) as response:
                assert response.status == 200
                assert await response.read() == ANSWER
    return sent


@pytest.mark.parametrize("upstreams", [0.002], indirect=True)
@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])
async def test_a_primary_that_answers_within_the_head_start_is_answered_before_a_shadow_leaves(
    upstreams: tuple[Timed, Timed], start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = upstreams
    server = await start_shadowtap(make_config(primary.url, {"c": candidate.url}))
    users = [f"u{i}" for i in range(20)]
    sent = await send(server.proxy_port, users)
    await drain(server)
    assert sorted(candidate.arrived) == sorted(users)  # every shadow went out in the end
    for user in users:
        # Either the primary's answer was written first, or the head start had run out (a
        # stalled loop): never a shadow racing a primary that answers in 2 ms.
        waited = candidate.arrived[user] - sent[user]
        assert candidate.arrived[user] > primary.answered[user] or waited >= PRIMARY_HEAD_START_S


@pytest.mark.parametrize("upstreams", [1.0], indirect=True)
@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])
async def test_a_slow_primary_holds_its_shadows_back_no_longer_than_the_head_start(
    upstreams: tuple[Timed, Timed], start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = upstreams
    server = await start_shadowtap(make_config(primary.url, {"c": candidate.url}))
    await send(server.proxy_port, ["slow"])
    await drain(server)
    # The candidate had its request (and answered it) while the primary was still thinking.
    assert candidate.answered["slow"] < primary.answered["slow"]
    assert candidate.arrived["slow"] - primary.arrived["slow"] < 0.5
