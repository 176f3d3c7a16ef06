"""An answer read through aiohttp's client (`AiohttpAnswer`: a HEAD or upgrade to the primary, an
LLM judge) keeps its connection only when it was read whole: an answer the reader stopped early
(over its cap, endless) must not leave its unread bytes on a connection the next request would
reuse. The upstream is a raw asyncio server on loopback that counts its connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import Pace
from shadowtap.upstream import AiohttpAnswer

UNLIMITED = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0)
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"word "}}]}\n\n'
WHOLE = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}'


class Upstream:
    """Answers `/endless` with a chunked stream that never ends, anything else with WHOLE."""

    def __init__(self) -> None:
        self.accepted = 0
        self.closed_by_client = 0
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                if head.startswith(b"POST /endless"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
                    writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
                    while True:
                        writer.write(b"%x\r\n%s\r\n" % (len(EVENT), EVENT))
                        await writer.drain()
                        await asyncio.sleep(0.001)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(WHOLE), WHOLE))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    server = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield state


async def read(session: aiohttp.ClientSession, url: str, cap: int) -> AnswerReader:
    reader = AnswerReader("judge", UNLIMITED, AnswerLimits(cap))
    async with session.post(url, data=b"{}", auto_decompress=False) as response:
        await asyncio.wait_for(reader.read(AiohttpAnswer(response)), 10)
    return reader


async def test_an_answer_read_whole_keeps_its_connection(upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            reader = await read(session, upstream.url + "/whole", 64 * 1024)
            assert (await reader.completion()).text == "hi"
    assert upstream.accepted == 1


async def test_an_endless_answer_stopped_at_its_cap_drops_its_connection(
    upstream: Upstream,
) -> None:
    async with aiohttp.ClientSession() as session:
        stopped = await read(session, upstream.url + "/endless", 4096)
        assert stopped.stopped  # cut at the cap, not read to an end that never comes
        for _ in range(2):  # the next answers are their own, on a new connection
            reader = await read(session, upstream.url + "/whole", 64 * 1024)
            assert (await reader.completion()).text == "hi"
        for _ in range(100):
            if upstream.closed_by_client:
                break
            await asyncio.sleep(0.01)
        assert upstream.closed_by_client == 1  # the endless one, while the session is open
    assert upstream.accepted == 2
