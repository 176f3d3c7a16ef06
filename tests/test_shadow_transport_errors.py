"""A shadow's transport error is kept whole for the recorder to scrub, but bounded: a
candidate whose answer breaks aiohttp's parser is quoted in the error, line and all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from shadowtap.shadow import ShadowTarget
from shadowtap.shadow_call import MAX_ERROR_CHARS, call_shadow

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
# (aiohttp's client quotes the line it failed on, up to what one read gave it: ~128-500 KB)
BROKEN = {
    "chunk size": CHUNKED + b"Z" * 200_000 + b"\r\n",
    "header name": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX" + b"\x7f" * 100_000 + b": v\r\n",
}


@asynccontextmanager
async def answer_with(payload: bytes) -> AsyncIterator[str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(payload)
        await writer.drain()
        await reader.read()  # until the client gives up on the connection
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def shadow_error(url: str) -> str | None:
    target = ShadowTarget("c", "candidate", url, 5.0, 1.0)  # type: ignore[arg-type]
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": "Bearer tok3n-of-the-client"}))
    async with aiohttp.ClientSession() as session:  # no pool: aiohttp's client sends it
        completion, outcome = await call_shadow(session, target, "POST", "/v1", b"{}", headers)
    assert outcome == "error"
    return completion.error


@pytest.mark.asyncio
@pytest.mark.parametrize("how", sorted(BROKEN))
async def test_an_error_quoting_a_broken_answer_is_bounded_and_never_cut(how: str) -> None:
    async with answer_with(BROKEN[how]) as url:
        error = await shadow_error(url)
    assert error is not None and error.startswith("ClientResponseError (its ")
    assert len(error) <= MAX_ERROR_CHARS
    assert "ZZZZ" not in error and "x7f\\\\x7f" not in error  # dropped whole, not in part


@pytest.mark.asyncio
async def test_a_short_error_is_kept_whole() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    error = await shadow_error(f"http://127.0.0.1:{port}")
    assert error is not None and error.startswith("ClientConnectorError: ")
    assert f"127.0.0.1:{port}" in error
