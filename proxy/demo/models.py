"""Simulated models: aiohttp apps serving `/v1/chat/completions`, Anthropic's `/v1/messages`
(`shadowtap.demo.anthropic`) and `/v1/models`, JSON or SSE, with a profile's latency, wording
and failures.

Standalone (the compose stack runs them as their own service):

    python -m shadowtap.demo.models --listen 0.0.0.0:8001 --profile paraphrase
    python -m shadowtap.demo.models --host 0.0.0.0 --profiles primary=8000,fast-agree=8001

Once listening it prints one JSON line per model, e.g.
`{"profile": "primary", "url": "http://127.0.0.1:8000"}` (port 0 picks a free port, so
`shadowtap demo` reads these lines to learn where its models are).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from shadowtap.config import split_host_port
from shadowtap.demo import anthropic
from shadowtap.demo.answers import Answer, answer
from shadowtap.demo.profiles import PROFILES, Profile
from shadowtap.demo.text import digest

PIECE = re.compile(r"\s*\S+")  # a "token" for streaming: a word with its leading space


@dataclass(slots=True)
class ModelState:
    profile: Profile
    speed: float
    rng: random.Random
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    outcomes: Counter[str] = field(default_factory=Counter)  # what was served; tests read it


STATE = web.AppKey("state", ModelState)


def build_app(
    profile: Profile | str, *, speed: float = 1.0, seed: int | None = None
) -> web.Application:
    """One simulated model. `speed` divides every delay (tests use 50-1000)."""
    if isinstance(profile, str):
        profile = PROFILES[profile]
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATE] = ModelState(profile=profile, speed=speed, rng=random.Random(seed))
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", list_models)
    app.on_shutdown.append(_release_hangs)
    return app


async def _release_hangs(app: web.Application) -> None:
    app[STATE].closing.set()  # hanging handlers return at once instead of holding up shutdown


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _error(status: int, message: str, kind: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status, dumps=_dumps)


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = {
        "id": state.profile.name,
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "shadowtap-demo",
    }
    return web.json_response({"object": "list", "data": [model]})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "We could not parse the JSON body of your request.", "invalid_request")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _error(400, "'messages' is a required property", "invalid_request_error")
    if not body["messages"]:
        return _error(400, "'messages' must contain at least one message", "invalid_request")
    return await _serve(request, body, anthropic_api=False)


async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic's Messages API: the same model, asked through another provider's API."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return anthropic.error(400, "The request body is not valid JSON.", "invalid_request_error")
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("messages"), list)
        or not body["messages"]
    ):
        return anthropic.error(400, "messages: Field required", "invalid_request_error")
    if not isinstance(body.get("max_tokens"), int):
        return anthropic.error(400, "max_tokens: Field required", "invalid_request_error")
    view = anthropic.chat_view(body)
    view["model"], view["stream"] = body.get("model"), body.get("stream")
    return await _serve(request, view, anthropic_api=True)


async def _serve(
    request: web.Request, body: dict[str, Any], *, anthropic_api: bool
) -> web.StreamResponse:
    """A profile's answer to a chat-shaped request, in the API it was asked through."""
    state = request.app[STATE]
    fail = anthropic.error if anthropic_api else _error
    profile, rng, speed = state.profile, state.rng, state.speed
    fault = profile.fault(rng)
    ttft = profile.ttft_s(rng, speed)
    if fault == "hang":
        state.outcomes["hang"] += 1
        with contextlib.suppress(TimeoutError):
            # Not divided by `speed`: a hang must outlast any client timeout at every speed.
            await asyncio.wait_for(state.closing.wait(), profile.hang_s)
        return fail(503, "The server is shutting down.", "server_error")
    if fault == "error":
        state.outcomes["error"] += 1
        await asyncio.sleep(ttft / 2)
        status = rng.choice((500, 500, 503))
        kind = "api_error" if anthropic_api else "server_error"  # each API's word for it
        return fail(status, "The server had an error while processing your request.", kind)
    reply = answer(body, profile.style, rng)
    meta = _Meta(
        id=f"chatcmpl-{digest(body, time.time_ns()):016x}",
        created=int(time.time()),
        model=str(body.get("model") or profile.name),
        fingerprint=f"fp_{digest(profile.name):08x}"[:11],
    )
    per_token = profile.token_delay_s(rng, speed)
    if body.get("stream"):
        state.outcomes["reset" if fault else "ok"] += 1
        if anthropic_api:
            await asyncio.sleep(ttft)
            return await anthropic.stream(
                request,
                reply,
                meta.id.replace("chatcmpl-", "msg_"),
                meta.model,
                PIECE.findall,
                lambda tokens: per_token * tokens,
                3 if fault else None,
            )
        options = body.get("stream_options") or {}
        return await _stream(
            request, reply, meta, ttft, per_token, bool(options.get("include_usage")), fault
        )
    await asyncio.sleep(ttft + per_token * reply.completion_tokens)
    if fault == "reset":
        state.outcomes["reset"] += 1
        _reset(request)
        return web.Response(status=500)  # never reaches the client: the socket is gone
    state.outcomes["ok"] += 1
    if anthropic_api:
        message = anthropic.message_json(reply, meta.id.replace("chatcmpl-", "msg_"), meta.model)
        return web.json_response(message, dumps=_dumps)
    return web.json_response(_completion_json(reply, meta), dumps=_dumps)


def _reset(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()  # RST-like: the client sees the connection drop, no response


@dataclass(frozen=True, slots=True)
class _Meta:
    id: str
    created: int
    model: str
    fingerprint: str


def _usage(reply: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _tool_calls_json(reply: Answer) -> list[dict[str, Any]]:
    return [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]},
        }
        for call in reply.tool_calls
    ]


def _completion_json(reply: Answer, meta: _Meta) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = _tool_calls_json(reply)
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": meta.fingerprint,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": _usage(reply),
    }


def _deltas(reply: Answer, rng: random.Random) -> AsyncIterator[tuple[dict[str, Any], int]]:
    """(delta, tokens it carries) in the order OpenAI streams them: content in 1-3 token
    pieces; a tool call as its id/name first, then its arguments in small fragments."""

    async def gen() -> AsyncIterator[tuple[dict[str, Any], int]]:
        pieces = PIECE.findall(reply.text or "")
        i = 0
        while i < len(pieces):
            n = rng.randint(1, 3)
            yield {"content": "".join(pieces[i : i + n])}, n
            i += n
        for index, call in enumerate(reply.tool_calls):
            function = {"name": call["name"], "arguments": ""}
            head = {"index": index, "id": call["id"], "type": "function", "function": function}
            yield {"tool_calls": [head]}, 1
            args, j = call["arguments"], 0
            while j < len(args):
                n = rng.randint(3, 9)
                frag = {"index": index, "function": {"arguments": args[j : j + n]}}
                yield {"tool_calls": [frag]}, 1
                j += n

    return gen()


async def _stream(
    request: web.Request,
    reply: Answer,
    meta: _Meta,
    ttft: float,
    per_token: float,
    include_usage: bool,
    fault: str | None,
) -> web.StreamResponse:
    rng = request.app[STATE].rng
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    def frame(
        delta: dict[str, Any] | None, finish: str | None = None, usage: bool = False
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": meta.fingerprint,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            chunk["usage"] = _usage(reply) if usage else None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    try:
        await asyncio.sleep(ttft)
        await response.write(frame({"role": "assistant", "content": "", "refusal": None}))
        sent = 0
        async for delta, tokens in _deltas(reply, rng):
            await asyncio.sleep(per_token * tokens)
            await response.write(frame(delta))
            sent += 1
            if fault == "reset" and sent >= 3:
                break
        if fault == "reset":  # mid-stream: the client has a partial answer and a dead socket
            _reset(request)
            return response
        await response.write(frame({}, reply.finish_reason))
        if include_usage:
            await response.write(frame(None, usage=True))
        await response.write(b"data: [DONE]\n\n")
    except ConnectionResetError:
        return response  # the client gave up (its timeout): nothing left to send it
    await response.write_eof()
    return response


async def start_models(
    models: dict[str, tuple[str, int]], *, speed: float = 1.0, seed: int | None = None
) -> tuple[list[web.AppRunner], dict[str, str]]:
    """Start each profile on (host, port); returns the runners and each profile's base URL."""
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    for name, (host, port) in models.items():
        app = build_app(name, speed=speed, seed=None if seed is None else seed + len(runners))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        runners.append(runner)
        bound = runner.addresses[0]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        urls[name] = f"http://{shown}:{bound[1]}"
    return runners, urls


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m shadowtap.demo.models", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8001", help="HOST:PORT for --profile")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="primary")
    parser.add_argument(
        "--profiles", help="several models in one process: NAME=PORT,NAME=PORT (uses --host)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="host for --profiles")
    parser.add_argument("--speed", type=float, default=1.0, help="divide every delay by this")
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def models_from_args(args: argparse.Namespace) -> dict[str, tuple[str, int]]:
    if not args.profiles:
        return {args.profile: split_host_port(args.listen)}
    models: dict[str, tuple[str, int]] = {}
    for item in args.profiles.split(","):
        name, _, port = item.strip().partition("=")
        if name not in PROFILES or not port.isdigit():
            raise SystemExit(f"--profiles: expected NAME=PORT with NAME in {sorted(PROFILES)}")
        models[name] = (args.host, int(port))
    return models


async def _main(args: argparse.Namespace) -> None:
    runners, urls = await start_models(models_from_args(args), speed=args.speed, seed=args.seed)
    for name, url in urls.items():
        sys.stdout.write(orjson.dumps({"profile": name, "url": url}).decode() + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        import uvloop
    except ImportError:  # optional speed-up, as in the proxy (absent on Windows)
        asyncio.run(_main(args))
    else:
        uvloop.run(_main(args))


if __name__ == "__main__":
    main()
