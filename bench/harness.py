"""Shared benchmark plumbing: processes on loopback, fake upstreams and load generators.

Each server runs in its own process, so the proxy under test, the upstreams and the load
generator do not share an event loop: `Processes` starts `shadowtap serve` from a written
config, and the fake upstreams and the bare pass-through by running this file with a role
(`python bench/harness.py ROLE PORT [ARG]`). Public tools only: asyncio, aiohttp,
time.perf_counter, statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import resource
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
from shadowtap.tasks import TaskSet

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/chat/completions"
CHAT = orjson.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}]}
)
STREAM_CHAT = orjson.dumps(
    {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "Stream it."}]}
)
ANSWER_TEXT = "A short answer from the fast fake upstream, about thirty tokens long in total."
LONG_ANSWER_BYTES = 10_000
LONG_ANSWERS = 8  # distinct long answers an upstream rotates through
LONG_THINK_S = 0.005  # a little think time, so the fake is not faster than any real model


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


def shadowtap_config(
    primary: str,
    candidate: dict[str, str],
    *,
    rate: float,
    max_inflight: int | None = None,
    server: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A `shadowtap serve` config mirroring `rate` of requests to one candidate, uncapped.

    Example: `shadowtap_config(up, {"url": cand}, rate=1.0, storage={"enabled": False})`.
    """
    sampling: dict[str, Any] = {"rate": rate, "max_per_second": 0}
    if max_inflight is not None:
        sampling["max_inflight"] = max_inflight
    return {
        "server": {"log_level": "warning", **(server or {})},
        "primary": {"url": primary},
        "sampling": sampling,
        "candidates": {"candidate": candidate},
        **sections,
    }


# -- the fake upstreams ------------------------------------------------------------------------
def long_answer_text(variant: str, seed: int) -> str:
    """~10 kB of words; the candidate's answer changes every tenth word of the primary's."""
    rng = random.Random(seed)
    words: list[str] = []
    size = 0
    while size < LONG_ANSWER_BYTES:
        word = f"{rng.choice(['model', 'answer', 'token', 'proxy', 'shadow'])}{rng.randint(0, 999)}"
        words.append(word)
        size += len(word) + 1
    if variant == "candidate":
        words = [w if i % 10 else f"changed{i}" for i, w in enumerate(words)]
    return " ".join(words)


def fake_upstream_app(
    texts: Sequence[str] = (ANSWER_TEXT,),
    *,
    completion_tokens: int = 30,
    think_s: float = 0.0,
    event_gap_s: float = 0.0,
) -> web.Application:
    """Answers `texts` in turn, as JSON or as one SSE event per word (`"stream":true`).

    Every answer is built up front: the fake must cost next to nothing per request.
    """
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": completion_tokens,
        "total_tokens": 12 + completion_tokens,
    }
    answers = [
        orjson.dumps(
            {
                "id": f"chatcmpl-{index}",
                "object": "chat.completion",
                "created": 1,
                "model": "bench",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )
        for index, text in enumerate(texts)
    ]
    streams = [
        [
            b"data: "
            + orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": word + " "}}]})
            + b"\n\n"
            for word in text.split()
        ]
        + [b"data: [DONE]\n\n"]
        for text in texts
    ]
    count = 0

    async def chat(request: web.Request) -> web.StreamResponse:
        nonlocal count
        body = await request.read()
        if think_s:
            await asyncio.sleep(think_s)
        count += 1
        turn = count % len(texts)
        if b'"stream":true' not in body:
            return web.Response(body=answers[turn], content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in streams[turn]:
            await response.write(event)
            if event_gap_s:
                await asyncio.sleep(event_gap_s)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post(PATH, chat)
    return app


BARE_SESSION = web.AppKey("session", aiohttp.ClientSession)


def bare_passthrough_app(upstream: str) -> web.Application:
    """The baseline: the least a correct streaming aiohttp reverse proxy must do."""

    async def on_startup(app: web.Application) -> None:
        app[BARE_SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def on_cleanup(app: web.Application) -> None:
        await app[BARE_SESSION].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session = request.app[BARE_SESSION]
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


def role_app(role: str, arg: str | None) -> web.Application:
    """upstream [EVENT_GAP_S] | slow-upstream THINK_S | long-upstream primary|candidate |
    bare UPSTREAM_URL"""
    if role == "upstream":
        return fake_upstream_app(event_gap_s=float(arg or 0.0))
    if role == "slow-upstream":
        return fake_upstream_app(think_s=float(arg or 1.0))
    if role == "long-upstream" and arg in ("primary", "candidate"):
        texts = [long_answer_text(arg, seed) for seed in range(LONG_ANSWERS)]
        return fake_upstream_app(texts, completion_tokens=1700, think_s=LONG_THINK_S)
    if role == "bare" and arg:
        return bare_passthrough_app(arg)
    raise SystemExit(f"unknown role {role} {arg}; expected: {role_app.__doc__}")


def run_role(argv: list[str]) -> None:
    """Entry point for child processes: `ROLE PORT [ARG]`, serving until terminated."""
    import uvloop

    role, port, arg = argv[0], int(argv[1]), argv[2] if len(argv) > 2 else None
    app = role_app(role, arg)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Processes:
    """Child processes started for one benchmark run, all stopped at exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def role(self, role: str, arg: str = "") -> str:
        """Start a fake upstream or the bare pass-through (see `role_app`); its base URL."""
        port = free_port()
        self.spawn([sys.executable, __file__, role, str(port), *([arg] if arg else [])])
        return f"http://127.0.0.1:{port}"

    def shadowtap(
        self,
        config: dict[str, Any],
        workdir: Path,
        command: list[str] | None = None,
        stderr: Path | None = None,
        nofile: int | None = None,
    ) -> tuple[int, int]:
        """Start `shadowtap serve` with `config` on fresh ports: (proxy port, admin port).

        `command` replaces `shadowtap serve --config` (the config path is appended to it);
        `stderr` keeps the proxy's log in a file instead of discarding it; `nofile` starts it
        with that soft limit on open files (the hard limit unchanged), as many hosts do."""
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
        command = command or [shadowtap, "serve", "--config"]
        self.spawn([*command, str(path)], stderr, nofile)
        return port, admin

    def spawn(
        self, command: list[str], stderr: Path | None = None, nofile: int | None = None
    ) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = open(stderr, "ab") if stderr else subprocess.DEVNULL  # noqa: SIM115 - child owns it

        def limit_files() -> None:
            if nofile is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.children.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=limit_files
            )
        )

    def stop(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (Linux /proc): shadowtap's scorer workers, nginx's."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                children = [int(child) for child in task.read_text().split()]
                found += children
                pending += children
    return found


def tree_kb(pid: int, *fields: str) -> list[int]:
    """The sums of these /proc/PID/status fields (kB) over a process and its live descendants:
    a sidecar's scorer workers are memory its pod pays."""
    totals = [0] * len(fields)
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):  # a descendant that just exited
            status = Path(f"/proc/{each}/status").read_text().splitlines()
            values = dict(line.split(":", 1) for line in status)
            for index, field in enumerate(fields):
                totals[index] += int(values[field].split()[0])
    return totals


def memory_kb(pid: int) -> tuple[int, int]:
    """(resident set size, its peak so far) in kB of a process and its live descendants, from
    Linux /proc. The peak is the sum of each process's own (an upper bound on the peak of the
    sum)."""
    rss, peak = tree_kb(pid, "VmRSS", "VmHWM")
    return rss, peak


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by a process, its live descendants and the children
    it has reaped (Linux /proc): a sidecar's scorer workers are CPU its pod pays."""
    total = 0
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            if each == pid:
                total += int(fields[13]) + int(fields[14])  # reaped children's
    return total / os.sysconf("SC_CLK_TCK")


async def settle(pids: Sequence[int], window_s: float = 0.5, within_s: float = 30.0) -> float:
    """Wait until these processes (and theirs) together use under 4% of a core over
    `window_s`: the work a load left behind (shadows in flight, scoring, recording) is done.
    (/proc counts CPU in 10 ms ticks: 4% of 0.5 s is two ticks.) Returns the seconds waited,
    at most `within_s`."""
    started = time.perf_counter()
    while time.perf_counter() - started < within_s:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(window_s)
        if sum(cpu_seconds(pid) for pid in pids) - before < 0.04 * window_s:
            break
    return time.perf_counter() - started


# -- the client side ---------------------------------------------------------------------------
async def wait_ready(
    url: str,
    timeout_s: float = 20.0,
    child: subprocess.Popen[bytes] | None = None,
    poll_s: float = 0.1,
) -> None:
    """Poll until `url` answers 200; fail at once when `child`, the server, has exited."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child is not None and child.poll() is not None:
                raise RuntimeError(f"{url}: the server exited ({child.returncode})")
            try:
                async with session.post(url, data=CHAT) as response:
                    await response.read()
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(poll_s)
    raise RuntimeError(f"{url} did not come up")


async def metric_samples(admin_port: int) -> dict[str, float]:
    """Every sample on a proxy's admin /metrics, keyed by its line's name and labels."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
            text = await response.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def total(samples: dict[str, float], name: str, label: str = "") -> float:
    """Sum of metric `name` over its label sets (those containing `label`, when given)."""
    return sum(
        value for key, value in samples.items() if key.split("{", 1)[0] == name and label in key
    )


def counted_drops(samples: dict[str, float]) -> float:
    """Sampled exchanges the proxy counted as not stored: every `shadowtap_*dropped*_total` or
    `*lost*_total` counter, and storage write errors."""
    dropped = sum(
        value
        for key, value in samples.items()
        if re.match(r"^shadowtap_\w*(dropped|lost)\w*_total$", key.split("{", 1)[0])
    )
    return dropped + total(samples, "shadowtap_record_write_errors_total")


async def metric_total(admin_port: int, name: str) -> float:
    """Sum of every sample of metric `name` (all label sets) on a proxy's admin /metrics."""
    return total(await metric_samples(admin_port), name)


async def closed_loop_count(
    url: str, body: bytes, concurrency: int, duration_s: float
) -> tuple[int, float]:
    """`concurrency` clients sending back to back for `duration_s`: (requests answered 200,
    seconds from the first send to the last answer). Any other status is an error."""
    done = 0
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.post(url, data=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done, time.perf_counter() - started


async def closed_loop(url: str, body: bytes, concurrency: int, duration_s: float) -> float:
    """Requests per second with `concurrency` clients each sending back to back."""
    done, seconds = await closed_loop_count(url, body, concurrency, duration_s)
    return done / seconds


async def open_loop(url: str, body: bytes, rate: float, duration_s: float) -> list[float]:
    """Send at a fixed rate whatever the answers' pace (a closed loop would slow down with the
    proxy and hide its stalls); return every request's latency in seconds."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal failures
            started = time.perf_counter()
            try:
                async with session.post(url, data=body) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
            except aiohttp.ClientError:
                failures += 1
                return
            latencies.append(time.perf_counter() - started)

        tasks = TaskSet()
        start = time.perf_counter()
        for i in range(int(rate * duration_s)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.spawn(one(), name=f"bench-request-{i}")
        await tasks.wait(None)
    if failures:
        raise RuntimeError(f"{failures} requests to {url} failed")
    return latencies


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


if __name__ == "__main__":
    run_role(sys.argv[1:])
