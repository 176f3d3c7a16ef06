"""Helpers for tests that drive shadowtap end to end: one chat request, raw HTTP posts, an LLM
judge that calls every pair a tie, and a sink that keeps the exchanges the pipeline hands over."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiohttp import web

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "Name a prime."}]}


async def post(port: int, payload: dict[str, Any], **headers: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=payload, headers=headers
        ) as response:
            return response.status, await response.read()


async def post_direct(url: str, payload: dict[str, Any]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=payload) as response:
            return response.status, await response.read()


async def start_tie_judge(aiohttp_server: Any, asked: list[bytes] | None = None) -> str:
    """A real judge on loopback that calls every pair a tie; its base URL. Each request's body
    is appended to `asked` when given."""

    async def judge(request: web.Request) -> web.Response:
        body = await request.read()
        if asked is not None:
            asked.append(body)
        reply = orjson.dumps({"winner": "tie", "rationale": "alike"}).decode()
        return web.json_response({"choices": [{"message": {"content": reply}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", judge)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def drain(server: Any) -> None:
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)


class RecordingSink:
    """Keeps every exchange it is given (and, like the recorder, gives its bytes back)."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def record(self, exchange: Any) -> bool:
        self.seen.append(exchange)
        exchange.release()
        return True
