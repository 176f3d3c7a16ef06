"""What a hostile candidate and big prompts cost the primary path: latency and memory.

Latency: three `shadowtap serve` processes in front of the same primary (a fake with
`--think` seconds of think time), mirroring every request; two to a healthy candidate (the
second, `control`, is an A/A check of the machine's noise), the third to a candidate that
answers every request with an SSE stream that never ends (at full loopback speed, or
`--stream-rate` bytes per second per stream). An open loop sends
`--rps` JSON requests per second to each in turn, for `--duration` seconds per round; the
primary's p50/p99 per round (a request that fails, or is still unanswered after
`--client-timeout` s, counts at the time it took), then the medians of rounds and of the
per-round ratios to the healthy one (endless 1.00: the hostile candidate costs the primary
nothing; control: how far apart two identical proxies land on this machine).

Memory: one `shadowtap serve` recording to DuckDB, mirroring every request to a healthy
candidate, while `--clients` clients send `--prompt-mb` MB prompts back to back for
`--memory-duration` seconds; the proxy's peak RSS (VmHWM, from /proc) and its RSS at the end.

    .venv/bin/python bench/shadow_load.py [--rounds 5] [--rps 40] [--duration 4]
        [--stream-rate 0] [--clients 8] [--prompt-mb 2] [--memory-duration 30]
        [--skip-latency] [--skip-memory] [--set sampling.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson
from aiohttp import web
from shadowtap.tasks import TaskSet

from bench.harness import (
    CHAT,
    PATH,
    Processes,
    fake_upstream_app,
    free_port,
    percentile,
    shadowtap_config,
    wait_ready,
)

EVENT = (
    b'data: {"id":"chatcmpl-endless","object":"chat.completion.chunk","created":1,'
    b'"model":"endless","choices":[{"index":0,"delta":{"content":"more "},'
    b'"finish_reason":null}]}\n\n'
)


def endless_app(bytes_per_second: float) -> web.Application:
    """Answers every request with an SSE stream that never ends (until the reader leaves)."""
    block = EVENT * max(1, 16384 // len(EVENT))

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            while True:
                await response.write(block)
                if bytes_per_second:
                    await asyncio.sleep(len(block) / bytes_per_second)
        except (ConnectionError, asyncio.CancelledError):  # the reader left
            pass
        return response

    app = web.Application()
    app.router.add_post(PATH, chat)
    return app


def big_prompt_app() -> web.Application:
    """A fast fake that takes prompts of any size (aiohttp's default refuses over 1 MiB)."""
    answer = orjson.dumps(
        {
            "id": "chatcmpl-big",
            "object": "chat.completion",
            "model": "bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Read it all."}}],
            "usage": {"prompt_tokens": 500_000, "completion_tokens": 3},
        }
    )

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post(PATH, chat)
    return app


def run_role(argv: list[str]) -> None:
    """Child processes: `fake PORT THINK_S`, `big PORT 0` or `endless PORT BYTES_PER_S`."""
    import uvloop

    role, port, arg = argv[0], int(argv[1]), float(argv[2])
    if role == "fake":
        app = fake_upstream_app(think_s=arg)
    elif role == "big":
        app = big_prompt_app()
    else:
        app = endless_app(arg)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def start_role(processes: Processes, role: str, arg: float) -> str:
    port = free_port()
    processes.spawn([sys.executable, __file__, role, str(port), str(arg)])
    return f"http://127.0.0.1:{port}"


def parse_sets(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`--set sampling.max_held_bytes=1000` → {"sampling": {"max_held_bytes": 1000}}."""
    tables: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        table, _, name = key.partition(".")
        try:
            value: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw
        tables.setdefault(table, {})[name] = value
    return tables


def with_sets(config: dict[str, Any], sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {**config, **{t: {**config.get(t, {}), **v} for t, v in sets.items()}}


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, peak RSS) of a process in kB, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


# -- latency -------------------------------------------------------------------------------------
def latency(args: argparse.Namespace, sets: dict[str, dict[str, Any]]) -> None:
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            primary = start_role(processes, "fake", args.think)
            healthy = start_role(processes, "fake", args.think)
            endless = start_role(processes, "endless", args.stream_rate)
            ports = {}
            pairs = (("healthy", healthy), ("control", healthy), ("endless", endless))
            for name, candidate in pairs:
                config = shadowtap_config(
                    primary, {"url": candidate}, rate=1.0, storage={"enabled": False}
                )
                ports[name], _ = processes.shadowtap(with_sets(config, sets), Path(workdir))
            urls = {name: f"http://127.0.0.1:{port}{PATH}" for name, port in ports.items()}
            import uvloop

            results = uvloop.run(measure_latency(urls, args))
    finally:
        processes.stop()
    report_latency(results, args)


async def measure_latency(
    urls: dict[str, str], args: argparse.Namespace
) -> dict[str, dict[str, list[float]]]:
    for url in urls.values():
        await wait_ready(url)
    results: dict[str, dict[str, list[float]]] = {
        n: {"p50": [], "p99": [], "failed": []} for n in urls
    }
    names = list(urls)
    for index in range(args.rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            latencies, failed = await open_loop(urls[name], args)
            results[name]["p50"].append(percentile(latencies, 50) * 1000)
            results[name]["p99"].append(percentile(latencies, 99) * 1000)
            results[name]["failed"].append(failed)
            await asyncio.sleep(1.0)  # let the last round's shadows settle
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
    return results


async def open_loop(url: str, args: argparse.Namespace) -> tuple[list[float], int]:
    """`--rps` requests a second for `--duration` s whatever the answers' pace; each one's
    latency, a failure (or a wait past `--client-timeout`) counted at the time it took."""
    latencies: list[float] = []
    failed = 0
    timeout = aiohttp.ClientTimeout(total=args.client_timeout)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:

        async def one() -> None:
            nonlocal failed
            started = time.perf_counter()
            try:
                async with session.post(url, data=CHAT) as response:
                    await response.read()
                    failed += response.status != 200
            except (aiohttp.ClientError, TimeoutError):
                failed += 1
            latencies.append(time.perf_counter() - started)

        tasks = TaskSet()
        start = time.perf_counter()
        for i in range(int(args.rps * args.duration)):
            delay = start + i / args.rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.spawn(one(), name=f"bench-request-{i}")
        await tasks.wait(None)
    return latencies, failed


def report_latency(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    speed = f"{args.stream_rate:g} B/s per stream" if args.stream_rate else "loopback speed"
    print(
        f"primary latency, {args.rps:g} req/s JSON, every request mirrored; endless candidate "
        f"at {speed}; {args.rounds} rounds of {args.duration:g} s"
    )
    print(f"{'candidate':<10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}   rounds p50 / p99")
    for name, figures in results.items():
        p50s, p99s = figures["p50"], figures["p99"]
        rounds = " ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(p50s, p99s, strict=True))
        failed = int(sum(figures["failed"]))
        print(
            f"{name:<10}{statistics.median(p50s):>10.1f}{statistics.median(p99s):>10.1f}"
            f"{failed:>8}   {rounds}"
        )
    for q in ("p50", "p99"):
        for name in ("endless", "control"):
            pairs = zip(results[name][q], results["healthy"][q], strict=True)
            ratios = [e / h for e, h in pairs]
            listed = ", ".join(f"{r:.2f}" for r in ratios)
            print(
                f"{q} {name}/healthy: median of per-round ratios "
                f"{statistics.median(ratios):.2f}x (rounds: {listed})"
            )


# -- memory --------------------------------------------------------------------------------------
def memory(args: argparse.Namespace, sets: dict[str, dict[str, Any]]) -> None:
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            primary = start_role(processes, "big", 0.0)
            candidate = start_role(processes, "big", 0.0)
            config = shadowtap_config(
                primary,
                {"url": candidate},
                rate=1.0,
                server={"max_body_bytes": 64 * 1024 * 1024},
                storage={"path": str(Path(workdir) / "bench.duckdb")},
            )
            port, admin = processes.shadowtap(with_sets(config, sets), Path(workdir))
            pid = processes.children[-1].pid
            import uvloop

            done, failed, peak, end, counts = uvloop.run(
                measure_memory(f"http://127.0.0.1:{port}{PATH}", admin, pid, args)
            )
    finally:
        processes.stop()
    print(
        f"memory: {args.clients} clients, {args.prompt_mb:g} MB prompts, every request "
        f"mirrored and recorded, {args.memory_duration:g} s: {done} answered ({failed} failed); "
        f"proxy RSS peak {peak / 1024:.0f} MB, at the end {end / 1024:.0f} MB"
    )
    print("    " + ", ".join(f"{name} {value:g}" for name, value in counts.items()))


async def measure_memory(
    url: str, admin: int, pid: int, args: argparse.Namespace
) -> tuple[int, int, int, int, dict[str, float]]:
    await wait_ready(url)
    filler = "w" * int(args.prompt_mb * 1_000_000)
    done = failed = 0
    deadline = time.perf_counter() + args.memory_duration

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal done, failed
        sent = 0
        while time.perf_counter() < deadline:
            body = orjson.dumps(
                {
                    "model": "bench",
                    "messages": [{"role": "user", "content": f"{index}-{sent} {filler}"}],
                }
            )
            sent += 1
            try:
                async with session.post(url, data=body) as response:
                    await response.read()
                    done += response.status == 200
                    failed += response.status != 200
            except aiohttp.ClientError:
                failed += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(i, session) for i in range(args.clients)))
    await asyncio.sleep(2.0)  # let the recorder catch up before the last reading
    end, peak = memory_kb(pid)
    return done, failed, peak, end, await shadow_counts(admin)


async def shadow_counts(admin: int) -> dict[str, float]:
    """Sampling outcomes, records written and dropped, and bytes held, from /metrics."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{admin}/metrics") as response:
            text = await response.text()
    wanted = {
        "shadowtap_sampling_decisions_total": "outcome",
        "shadowtap_records_written_total": "",
        "shadowtap_records_dropped_total": "",
        "shadowtap_held_bytes": "",
    }
    counts: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if line.startswith("#") or name not in wanted:
            continue
        label = wanted[name]
        key = name.removeprefix("shadowtap_").removesuffix("_total")
        if label and f'{label}="' in line:
            key = line.split(f'{label}="', 1)[1].split('"', 1)[0]
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rps", type=float, default=40.0)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per latency round")
    parser.add_argument("--think", type=float, default=0.02, help="fake upstreams' think time")
    parser.add_argument("--stream-rate", type=float, default=0.0, help="0: loopback speed")
    parser.add_argument("--client-timeout", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--prompt-mb", type=float, default=2.0)
    parser.add_argument("--memory-duration", type=float, default=30.0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="TABLE.KEY=VALUE (JSON)")
    args = parser.parse_args()
    sets = parse_sets(args.set)
    if not args.skip_latency:
        latency(args, sets)
    if not args.skip_memory:
        memory(args, sets)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fake", "big", "endless"):
        run_role(sys.argv[1:])
    else:
        main()
