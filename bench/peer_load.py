"""Load for the peer comparison: closed-loop throughput (wrk, or a Python generator) and
streams timed chunk by chunk.

Each throughput run also says what the load generator itself used (its CPU seconds per wall
second, i.e. how much of one core): a generator near 1.0 is the bottleneck, and the run says
so rather than passing its ceiling off as the proxy's.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

import aiohttp

from bench.harness import closed_loop_count

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""
SATURATED = 0.9  # a load generator using this much of a core is (close to) the bottleneck


@dataclass(slots=True)
class Throughput:
    requests: int
    seconds: float
    errors: int
    generator_cpu: float  # the load generator's CPU seconds per wall second

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def lua_string(data: bytes) -> str:
    """A Lua string literal of any bytes (decimal escapes)."""
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def wrk_run(url: str, body: bytes, connections: int, duration_s: float) -> Throughput:
    """One wrk run (one thread): its request count and its own CPU time (from wait4)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT.format(body=lua_string(body)))
        script.flush()
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s:g}s",
            "--timeout",
            "10s",
            "-s",
            script.name,
            url,
        ]
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert child.stdout is not None
        output = child.stdout.read().decode()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
    if child.returncode:
        raise RuntimeError(f"wrk failed: {output}")
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
    if not match:
        raise RuntimeError(f"wrk printed no request count: {output}")
    seconds = float(match.group(2)) / (1000 if match.group(3) == "ms" else 1)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Throughput(
        int(match.group(1)), seconds, errors, (usage.ru_utime + usage.ru_stime) / wall
    )


async def python_run(url: str, body: bytes, connections: int, duration_s: float) -> Throughput:
    """The fallback generator (bench/harness.py's closed loop), timed by its own CPU use."""
    cpu = time.process_time()
    done, seconds = await closed_loop_count(url, body, connections, duration_s)
    return Throughput(done, seconds, 0, (time.process_time() - cpu) / seconds)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


async def throughput(url: str, body: bytes, connections: int, duration_s: float) -> Throughput:
    if have_wrk():
        return await asyncio.to_thread(wrk_run, url, body, connections, duration_s)
    return await python_run(url, body, connections, duration_s)


@dataclass(slots=True)
class Stream:
    first_s: float  # request sent -> first body chunk
    span_s: float  # first chunk -> last chunk
    max_gap_s: float  # the longest wait between two chunks
    complete: bool  # ended with the upstream's [DONE]


async def timed_stream(session: aiohttp.ClientSession, url: str, body: bytes) -> Stream:
    started = time.perf_counter()
    arrivals: list[float] = []
    tail = b""
    async with session.post(url, data=body) as response:
        async for chunk in response.content.iter_any():
            arrivals.append(time.perf_counter())
            tail = (tail + chunk)[-64:]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return Stream(
        first_s=arrivals[0] - started if arrivals else float("nan"),
        span_s=arrivals[-1] - arrivals[0] if arrivals else float("nan"),
        max_gap_s=max(gaps, default=0.0),
        complete=response.status == 200 and b"[DONE]" in tail,
    )


async def sequential_streams(url: str, body: bytes, count: int) -> list[Stream]:
    """`count` streams one after another (concurrency 1) on one kept-alive connection."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        await timed_stream(session, url, body)  # connection set up outside the figures
        return [await timed_stream(session, url, body) for _ in range(count)]


async def concurrent_streams(
    url: str, body: bytes, count: int, ramp_s: float, timeout_s: float
) -> dict[str, int]:
    """`count` streams held open at once (started over `ramp_s`): how many ended how
    ("completed", "incomplete" for a stream cut short, else the error's type)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int) -> str:
            await asyncio.sleep(ramp_s * index / count)
            try:
                complete = (await timed_stream(session, url, body)).complete
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                return type(error).__name__
            return "completed" if complete else "incomplete"

        outcomes = await asyncio.gather(*(one(i) for i in range(count)))
    return dict(collections.Counter(outcomes))


def loadgen_note(runs: list[Throughput]) -> str:
    tool = "wrk (1 thread)" if have_wrk() else "the Python load generator (wrk not installed)"
    busiest = max((r.generator_cpu for r in runs), default=0.0)
    verdict = (
        "it may be the bottleneck: read the ratios, not the absolute figures"
        if busiest >= SATURATED
        else "not the bottleneck"
    )
    return f"load generator: {tool}, at most {busiest:.2f} of a core in any run: {verdict}"
