"""`receive`: the request path's first stage — the client's body, read once and size-capped."""

from __future__ import annotations

import asyncio

from aiohttp import web


class BodyTooLarge(Exception):
    pass


async def receive(request: web.Request, max_bytes: int) -> bytes:
    """Read the body once, refusing more than `max_bytes` before buffering it."""
    if request.content_length is not None:
        if request.content_length > max_bytes:
            raise BodyTooLarge
        if request.content_length == 0:  # body-less POSTs (the SDK's cancel calls) send this
            return b""
        try:
            return await request.content.readexactly(request.content_length)
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
