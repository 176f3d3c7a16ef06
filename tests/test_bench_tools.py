"""The benchmark tools are correct: the bare floor relays bytes unchanged."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from bench.harness import bare_passthrough_app
from bench.peer_load import lua_string

EVERY_BYTE = bytes(range(256)) * 64


def echo_app() -> web.Application:
    """Answers the request body back, or streams it in uneven chunks on /stream; 418 on /teapot."""

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/teapot":
            return web.Response(status=418, body=b"short and stout")
        if request.path != "/stream":
            return web.Response(body=body, content_type="application/octet-stream")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(body), 1000):
            await response.write(body[start : start + 1000])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def test_bare_floor_relays_every_byte_status_and_stream_unchanged(
    aiohttp_server: Any,
) -> None:
    upstream = await aiohttp_server(echo_app())
    bare = await aiohttp_server(bare_passthrough_app(str(upstream.make_url("")).rstrip("/")))
    async with aiohttp.ClientSession() as session:
        async with session.post(bare.make_url("/v1/x?q=1"), data=EVERY_BYTE) as response:
            assert response.status == 200
            assert await response.read() == EVERY_BYTE
        async with session.post(bare.make_url("/stream"), data=EVERY_BYTE) as response:
            assert response.content_type == "text/event-stream"
            assert await response.read() == EVERY_BYTE
        async with session.post(bare.make_url("/teapot"), data=b"") as response:
            assert response.status == 418
            assert await response.read() == b"short and stout"


def test_lua_string_escapes_every_byte() -> None:
    assert lua_string(b'a"\n\\') == '"\\97\\34\\10\\92"'
