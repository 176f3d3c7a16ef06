"""The fake upstreams of `bench/abuse.py`: a primary whose every answer the client can predict
byte for byte, and one candidate server with a fault behaviour per path prefix.

Run as child processes: `python bench/abuse_fakes.py primary|candidate PORT`.

Primary: the answer depends only on the request's `X-Bench-Id` and `X-Bench-Stream` headers
(`primary_answer`), so the client compares what it received with what the primary sent,
whatever the body was (invalid JSON, 2 MB, nested 1000 deep). `X-Bench-Content: regex` makes
the answer a JSON string that a catastrophic pattern backtracks on.

Candidate: `http://127.0.0.1:PORT/<behaviour>` + the request path, behaviours `FAULTS`. It
counts the requests it received and those carrying `CANARY` anywhere (path, query, headers,
body): `GET /__bench/stats`.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
from aiohttp import web

CANARY = "sk-CANARYqs1234567"  # a credential the client sends; no candidate may ever see it
REGEX_ANSWER = '"' + "a" * 28 + '!"'  # the answer `^(a+)+$` backtracks on (2^28 steps)
FAULTS = ("ok", "hang", "error500", "reset", "garbage", "endless")
HANG_S = 600.0  # longer than any case; the proxy's own timeout must end it
ENDLESS_MAX_BYTES = 4 * 1024**3  # "endless", yet bounded should the proxy never stop reading


def primary_text(bench_id: str, content: str | None) -> str:
    return content or f"Answer {bench_id}: " + "the quick brown fox jumps over it " * 4


def primary_events(bench_id: str, content: str | None = None) -> list[bytes]:
    """The primary's SSE answer, one event per write."""
    events = []
    for word in primary_text(bench_id, content).split(" "):
        delta = {
            "id": f"chatcmpl-{bench_id}",
            "choices": [{"index": 0, "delta": {"content": word + " "}}],
        }
        events.append(b"data: " + orjson.dumps(delta) + b"\n\n")
    finish = {
        "id": f"chatcmpl-{bench_id}",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    return [*events, b"data: " + orjson.dumps(finish) + b"\n\n", b"data: [DONE]\n\n"]


def primary_answer(bench_id: str, stream: bool, content: str | None = None) -> bytes:
    """Exactly the bytes the fake primary sends for this request."""
    if stream:
        return b"".join(primary_events(bench_id, content))
    return orjson.dumps(
        {
            "id": f"chatcmpl-{bench_id}",
            "object": "chat.completion",
            "model": "primary",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": primary_text(bench_id, content)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40},
        }
    )


def primary_app() -> web.Application:
    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        bench_id = request.headers.get("X-Bench-Id", "none")
        content = REGEX_ANSWER if request.headers.get("X-Bench-Content") == "regex" else None
        if request.headers.get("X-Bench-Stream") != "1":
            body = primary_answer(bench_id, False, content)
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in primary_events(bench_id, content):
            await response.write(event)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def candidate_app() -> web.Application:
    stats = {"received": 0, "canary": 0}

    def carries_canary(request: web.Request, body: bytes) -> bool:
        seen = [request.path_qs, *request.headers.keys(), *request.headers.values()]
        return any(CANARY in text for text in seen) or CANARY.encode() in body

    async def answer(request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        body = await request.read()
        stats["received"] += 1
        stats["canary"] += carries_canary(request, body)
        stream = b'"stream":true' in body.replace(b" ", b"")
        if behaviour == "hang":
            await asyncio.sleep(HANG_S)
        if behaviour == "error500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if behaviour == "garbage":
            kind = "text/event-stream" if stream else "application/json"
            return web.Response(body=b"\x00\xffnot json {{ data: [[", content_type=kind)
        if behaviour == "endless":
            return await endless(request)
        events = primary_events("candidate", "A candidate answer that differs a little bit")
        if behaviour == "reset":
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream" if stream else "application/json"}
            )
            response.content_length = None if stream else 10_000
            await response.prepare(request)
            await response.write(b"".join(events[:3]) if stream else b'{"id": "chatcmpl-x", "ch')
            await asyncio.sleep(0.01)
            assert request.transport is not None
            request.transport.abort()  # mid-answer, as a crashing upstream does
            return response
        if not stream:
            return web.Response(
                body=primary_answer("candidate", False, "A candidate answer that differs a bit"),
                content_type="application/json",
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        """SSE at full loopback speed until the reader goes away."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = b'data: {"choices":[{"index":0,"delta":{"content":"more "}}]}\n\n'
        chunk = event * (16 * 1024 // len(event))
        sent = 0
        try:
            while sent < ENDLESS_MAX_BYTES:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def report(_: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_get("/__bench/stats", report)
    app.router.add_route("*", "/{behaviour}/{tail:.*}", answer)
    return app


def main(argv: list[str]) -> None:
    import uvloop

    role, port = argv[0], int(argv[1])
    app = {"primary": primary_app, "candidate": candidate_app}[role]()
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(sys.argv[1:])
