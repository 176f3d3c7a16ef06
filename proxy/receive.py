"""`receive`: the request path's first stage — the client's body, read once and size-capped."""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11


class BodyTooLarge(Exception):
    pass


class ExpectationFailed(Exception):
    """An `Expect` header other than `100-continue`: answered 417, the body never read."""


async def receive(request: web.BaseRequest, max_bytes: int) -> bytes:
    """Read the body once, refusing more than `max_bytes` before buffering it.

    A client that sent `Expect: 100-continue` waits for the go-ahead before its body; it gets
    it here, after a too-large `Content-Length` was refused (the point of asking first).
    """
    length = request.content_length  # parsed from the header on every access: read once
    if length is not None and length > max_bytes:
        raise BodyTooLarge
    if request.headers.get(hdrs.EXPECT):
        await _continue(request)
    if length is not None:
        if length == 0:  # body-less POSTs (the SDK's cancel calls) send this
            return b""
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("client sent less than its Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _continue(request: web.BaseRequest) -> None:
    """What aiohttp's router did before the proxy's handler took requests directly: HTTP/1.1
    `Expect: 100-continue` is answered `100 Continue`; any other expectation fails."""
    if request.version != HttpVersion11:
        return
    if request.headers[hdrs.EXPECT].lower() != "100-continue":
        raise ExpectationFailed
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's own bytes are counted from here
    await request.writer.drain()
