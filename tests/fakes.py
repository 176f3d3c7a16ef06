"""Fake OpenAI-compatible upstreams: real aiohttp apps on loopback, deterministic answers.

`FakeModel(behaviour=...)` answers chat completions (JSON or SSE) with text derived from the
request, so two fakes with the same behaviour answer byte-identically, and records every
request it received (headers, body) for assertions.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

BEHAVIOURS = (
    "ok",
    "paraphrase",
    "hang",
    "error500",
    "reset",
    "garbage",
    "slow",
    "drip",
    "reject_key",
    "gzip",
)


@dataclass
class Received:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


def answer_text(request: dict[str, Any], behaviour: str = "ok") -> str:
    messages = request.get("messages") or [{}]
    last = str(messages[-1].get("content", ""))
    if behaviour == "paraphrase":
        return f"In short, regarding '{last}': the reply differs and is phrased otherwise."
    return f"The answer to '{last}' is forty-two, as computed carefully."


def _completion_id(body: bytes) -> str:
    return "chatcmpl-" + hashlib.sha256(body).hexdigest()[:20]


def chat_json(request: dict[str, Any], text: str, body: bytes) -> dict[str, Any]:
    return {
        "id": _completion_id(body),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": request.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": len(text.split()),
            "total_tokens": 11 + len(text.split()),
        },
    }


def sse_events(request: dict[str, Any], text: str, body: bytes) -> list[bytes]:
    base = {
        "id": _completion_id(body),
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": request.get("model", "fake"),
    }

    def event(choices: list[Any], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n"

    events = [event([{"index": 0, "delta": {"role": "assistant", "content": ""}}])]
    for word in text.split(" "):
        events.append(event([{"index": 0, "delta": {"content": word + " "}}]))
    events.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if (request.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 11, "completion_tokens": len(text.split()), "total_tokens": 0}
        events.append(event([], usage=usage))
    events.append(b"data: [DONE]\n\n")
    return events


@dataclass
class FakeModel:
    behaviour: str = "ok"
    delay_s: float = 0.0  # before answering ("slow"), or between SSE events ("drip")
    received: list[Received] = field(default_factory=list)
    disconnects: int = 0
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path_qs, dict(request.headers), body))
        if request.path == "/v1/models":
            return web.json_response(
                {"object": "list", "data": [{"id": "fake", "object": "model"}]}
            )
        if request.path != "/v1/chat/completions":
            return web.json_response({"error": {"message": "no such route"}}, status=404)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            error = {
                "error": {
                    "message": "We could not parse the JSON body of your request.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
            return web.json_response(error, status=400)
        return await self._answer(request, payload, body)

    async def _answer(
        self, request: web.Request, payload: dict[str, Any], body: bytes
    ) -> web.StreamResponse:
        behaviour = self.behaviour
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour == "slow":
            await asyncio.sleep(self.delay_s)
        if behaviour == "error500":
            return web.json_response(
                {"error": {"message": "boom", "type": "server_error"}}, status=500
            )
        if behaviour == "reset":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.1)
            return web.Response()
        if behaviour == "reject_key":  # as providers do: the error echoes the rejected key
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            error = {
                "error": {
                    "message": f"Incorrect API key provided: {key}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            }
            return web.json_response(error, status=401)
        if behaviour == "garbage":
            return web.Response(body=b"\x00not json at all{{", content_type="application/json")
        text = answer_text(payload, behaviour)
        if not payload.get("stream"):
            answer = web.Response(
                body=orjson.dumps(chat_json(payload, text, body)), content_type="application/json"
            )
            if behaviour == "gzip":  # as providers do when the client accepts it
                answer.enable_compression(web.ContentCoding.gzip)
            return answer
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in sse_events(payload, text, body):
                await response.write(event)
                if behaviour == "drip":
                    await asyncio.sleep(self.delay_s)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        await response.write_eof()
        return response

    def chat_requests(self) -> list[Received]:
        return [r for r in self.received if r.path_qs.startswith("/v1/chat/completions")]
