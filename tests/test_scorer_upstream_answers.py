"""What a judge or an embedding endpoint answers is parsed as a hostile answer would be: a
real aiohttp server on loopback answers, `post_json` (scorers/upstream.py) reads. Whatever
comes back, the scorer gets a dict or an UpstreamError naming the URL, never another exception
(a deeply nested answer raised RecursionError from json.loads)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from shadowtap.scorers.upstream import UpstreamError, post_json


async def answering(aiohttp_server: Any, body: bytes) -> str:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/embeddings", answer)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1/embeddings"))


async def test_an_object_is_parsed(aiohttp_server: Any) -> None:
    url = await answering(aiohttp_server, b'{"data": [{"embedding": [0.5, -1.0]}]}')
    async with aiohttp.ClientSession() as session:
        payload = await post_json(session, url, {"input": "x"}, None)
    assert payload == {"data": [{"embedding": [0.5, -1.0]}]}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "a body that is not JSON"),
        (b"<html>busy</html>", "a body that is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "a body that is not JSON"),  # deeper than any parser
        (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "a body that is not JSON"),
        (b"[1, 2]", "JSON that is not an object"),
    ],
    ids=["empty", "html", "nested-arrays", "nested-objects", "array"],
)
async def test_a_hostile_answer_is_an_upstream_error(
    aiohttp_server: Any, body: bytes, error: str
) -> None:
    url = await answering(aiohttp_server, body)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamError, match=error) as raised:
            await post_json(session, url, {"input": "x"}, None)
    assert url in str(raised.value)
