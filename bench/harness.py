"""Shared benchmark plumbing: processes on loopback and an aiohttp load generator.

Each server runs in its own process (the script re-executes itself with a role), so the
proxy under test, the upstream and the load generator do not share an event loop. Public
tools only: asyncio, aiohttp, time.perf_counter, statistics.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
CHAT = orjson.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}]}
)
STREAM_CHAT = orjson.dumps(
    {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "Stream it."}]}
)
ANSWER_TEXT = "A short answer from the fast fake upstream, about thirty tokens long in total."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def toml_dump(config: dict[str, Any]) -> str:
    """Enough TOML for benchmark configs: nested tables of scalars and lists."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return orjson.dumps(v).decode()
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines: list[str] = []

    def table(prefix: str, data: dict[str, Any]) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
        if prefix and (scalars or not data):
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in data.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", config)
    return "\n".join(lines) + "\n"


# -- the fake upstream -------------------------------------------------------------------------
def fake_upstream_app(event_gap_s: float) -> web.Application:
    answer = orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER_TEXT},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
        }
    )
    events = [
        b"data: "
        + orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": word + " "}}]})
        + b"\n\n"
        for word in ANSWER_TEXT.split()
    ] + [b"data: [DONE]\n\n"]

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body:
            return web.Response(body=answer, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
            if event_gap_s:
                await asyncio.sleep(event_gap_s)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def bare_passthrough_app(upstream: str) -> web.Application:
    """The baseline: the least a correct streaming aiohttp reverse proxy must do."""

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.request(
            request.method, upstream + request.raw_path, data=body, headers=request.headers
        ) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status)
            response.content_type = upstream_response.content_type
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


def run_role(argv: list[str]) -> None:
    """Entry point for child processes: `--role upstream|bare PORT [ARG]`."""
    import uvloop

    role, port = argv[0], int(argv[1])
    if role == "upstream":
        app = fake_upstream_app(float(argv[2]) if len(argv) > 2 else 0.0)
    else:
        app = bare_passthrough_app(argv[2])
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Processes:
    """Child processes started for one benchmark run, all stopped at exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def role(self, script: str, *args: str) -> int:
        port = free_port()
        self.spawn([sys.executable, script, "--role", args[0], str(port), *args[1:]])
        return port

    def shadowtap(self, config: dict[str, Any], workdir: Path) -> tuple[int, int]:
        port, admin = free_port(), free_port()
        config = {
            **config,
            "server": {
                **config.get("server", {}),
                "listen": f"127.0.0.1:{port}",
                "admin_listen": f"127.0.0.1:{admin}",
            },
        }
        path = workdir / f"shadowtap-{port}.toml"
        path.write_text(toml_dump(config))
        shadowtap = str(Path(sys.executable).parent / "shadowtap")
        self.spawn([shadowtap, "serve", "--config", str(path)])
        return port, admin

    def spawn(self, command: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.children.append(
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def stop(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


async def wait_ready(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.post(url, data=CHAT) as response:
                    await response.read()
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def closed_loop(url: str, body: bytes, concurrency: int, duration_s: float) -> float:
    """Requests per second with `concurrency` clients each sending back to back."""
    done = 0
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.post(url, data=body) as response:
                    await response.read()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def sequential(url: str, body: bytes, count: int) -> tuple[list[float], list[float]]:
    """One request at a time: (total latency, time to first body chunk) in seconds each."""
    totals, firsts = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, data=body) as response:
                await response.content.readany()
                firsts.append(time.perf_counter() - started)
                await response.read()
            totals.append(time.perf_counter() - started)
    return totals, firsts
