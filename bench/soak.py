"""Soak: does the proxy's memory stay flat, and is nothing lost, over a long steady load?

A real `shadowtap serve` in front of a fast fake primary, mirroring `--sampling` of requests to
one slow candidate (`--candidate-delay` seconds of think time), recording to DuckDB and scoring
with `text_similarity`; an open loop sends `--rps` requests per second (one in five streamed,
each prompt distinct, `--prompt-bytes` long) for `--minutes`. Every minute it prints the proxy's
RSS (from /proc) and that minute's p50/p99, beside those of a control trickle sent straight to
the primary (`--control-rps`), so the machine's own noise shows. At the end: the least-squares
RSS slope after `--warmup` minutes (MB/min), p50/p99 overall and as the median of per-minute
ratios to the control, and records lost = sampled - rows in DuckDB -
counted drops (read from /metrics after the load, and from the file after a clean stop).

    .venv/bin/python bench/soak.py [--minutes 60] [--rps 200] [--sampling 0.2]
        [--no-recording] [--no-scoring] [--set storage.some_key=VALUE ...]
        [--debug FILE]   # the proxy runs under the hook below and writes JSON lines to FILE

The debug hook (benchmark only, never in the product) serves the same `ShadowtapServer` with
tracemalloc on and, every `--debug-every` seconds, writes: RSS, Python-traced bytes and the
allocation sites that grew most since the last dump, the most numerous object types, pyarrow's
pool (when something loaded it; serve does not), and DuckDB's `duckdb_memory()` per tag.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson

from bench.harness import (
    PATH,
    Processes,
    counted_drops,
    memory_kb,
    metric_samples,
    percentile,
    shadowtap_config,
    total,
    wait_ready,
)

MB = 1024.0  # /proc reports kB
STREAM_EVERY = 5  # one request in five asks for a streamed answer
MAX_OUTSTANDING = 2000  # the client never holds more than this many requests open


def prompt(index: int, size: int) -> bytes:
    words = " ".join(f"w{(index * 7919 + i) % 100_003}" for i in range(max(1, size // 8)))
    body: dict[str, Any] = {
        "model": "bench",
        "messages": [{"role": "user", "content": f"request {index}: {words}"[:size]}],
    }
    if index % STREAM_EVERY == 0:
        body["stream"] = True
    return orjson.dumps(body)


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, MB) points."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else float("nan")


class Load:
    """An open loop at a fixed rate; latencies kept per minute."""

    def __init__(self, url: str, rps: float, prompt_bytes: int) -> None:
        self.url, self.rps, self.prompt_bytes = url, rps, prompt_bytes
        self.latencies: list[list[float]] = [[]]
        self.failures = 0
        self.errors: Counter[str] = Counter()  # what the failures were
        self.not_sent = 0
        self.outstanding = 0
        self.sent = 0

    async def one(self, session: aiohttp.ClientSession, index: int) -> None:
        started = time.perf_counter()
        try:
            async with session.post(self.url, data=prompt(index, self.prompt_bytes)) as response:
                await response.read()
                if response.status != 200:
                    self.failures += 1
                    self.errors[f"status {response.status}"] += 1
                    return
        except (aiohttp.ClientError, OSError) as error:
            self.failures += 1
            self.errors[type(error).__name__] += 1
            return
        finally:
            self.outstanding -= 1
        self.latencies[-1].append(time.perf_counter() - started)

    async def run(self, duration_s: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            start = time.perf_counter()
            for index in range(int(self.rps * duration_s)):
                delay = start + index / self.rps - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.outstanding >= MAX_OUTSTANDING:
                    self.not_sent += 1
                    continue
                self.outstanding += 1
                self.sent += 1
                task = asyncio.ensure_future(self.one(session, index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=120)


async def soak(
    args: argparse.Namespace, port: int, admin: int, pid: int, primary: str
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{PATH}"
    await wait_ready(url)
    load = Load(url, args.rps, args.prompt_bytes)
    runner = asyncio.ensure_future(load.run(args.minutes * 60))
    # The control: the same prompts straight to the primary, a trickle beside the load, so each
    # minute's latency through the proxy can be read against what the machine gave anyone.
    direct = Load(primary + PATH, args.control_rps, args.prompt_bytes)
    control = asyncio.ensure_future(direct.run(args.minutes * 60))
    started = time.monotonic()
    rss_points: list[tuple[float, float]] = []
    print(
        f"{'min':>4}{'RSS MB':>9}{'peak MB':>9}{'sent':>8}{'p50 ms':>9}{'p99 ms':>9}{'fail':>6}"
        f"{'direct p50':>12}{'direct p99':>12}"
    )
    minute = 0
    while not runner.done():
        await asyncio.wait(
            [runner],
            timeout=max(0.0, started + args.every_s * (len(rss_points) + 1) - time.monotonic()),
        )
        elapsed_min = (time.monotonic() - started) / 60
        rss, peak = memory_kb(pid)
        rss_points.append((elapsed_min, rss / MB))
        if elapsed_min >= minute + 1 or (runner.done() and load.latencies[-1]):
            minute += 1
            done, baseline = load.latencies[-1], direct.latencies[-1]
            load.latencies.append([])
            direct.latencies.append([])
            p50, p99 = (percentile(done, q) * 1000 for q in (50, 99))
            d50, d99 = (percentile(baseline, q) * 1000 for q in (50, 99))
            print(
                f"{minute:>4}{rss / MB:>9.1f}{peak / MB:>9.1f}{load.sent:>8}{p50:>9.2f}"
                f"{p99:>9.2f}{load.failures:>6}{d50:>12.2f}{d99:>12.2f}",
                flush=True,
            )
    await control
    # Every sampled exchange waits for the slow candidate, then the writer's next flush.
    deadline = time.monotonic() + args.candidate_delay + 60
    while time.monotonic() < deadline and not args.no_recording:
        samples = await metric_samples(admin)
        sampled = total(samples, "shadowtap_sampling_decisions_total", 'outcome="sampled"')
        written = total(samples, "shadowtap_records_written_total")
        if written + counted_drops(samples) >= sampled:
            break
        await asyncio.sleep(1)
    return {"load": load, "direct": direct, "rss": rss_points, "peak": memory_kb(pid)[1]}


async def final_metrics(admin: int, proxy: subprocess.Popen[bytes]) -> dict[str, float]:
    """SIGTERM, then read /metrics until the admin listener closes (it closes last, after the
    recorder's final flush), so the counts are the final ones."""
    samples = await metric_samples(admin)
    proxy.terminate()
    while proxy.poll() is None:
        try:
            samples = await metric_samples(admin)
        except (aiohttp.ClientError, OSError, TimeoutError):
            break
        await asyncio.sleep(0.05)
    return samples


def rows_in(path: Path) -> int:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM exchanges").fetchall()[0][0])
    finally:
        con.close()


def toml_value(text: str) -> Any:
    import tomllib

    return tomllib.loads(f"v = {text}")["v"]


def build_config(args: argparse.Namespace, primary: str, candidate: str, db: Path) -> dict:
    storage: dict[str, Any] = {"path": str(db)} if not args.no_recording else {"enabled": False}
    sections: dict[str, Any] = {"storage": storage}
    if not args.no_scoring:
        sections["scorers"] = {"similarity": {"type": "text_similarity"}}
    config = shadowtap_config(primary, {"url": candidate}, rate=args.sampling, **sections)
    config["sampling"].pop("max_per_second")  # the shipped defaults, as a user would run it
    for assignment in args.set:
        dotted, _, value = assignment.partition("=")
        *tables, key = dotted.split(".")
        node = config
        for table in tables:
            node = node.setdefault(table, {})
        node[key] = toml_value(value)
    return config


def report(args: argparse.Namespace, result: dict[str, Any], rows: int | None) -> None:
    load: Load = result["load"]
    every = [x for minute in load.latencies for x in minute]
    warm = [(m, mb) for m, mb in result["rss"] if m >= args.warmup]
    samples = result["samples"]
    sampled = total(samples, "shadowtap_sampling_decisions_total", 'outcome="sampled"')
    dropped = counted_drops(samples)
    written = total(samples, "shadowtap_records_written_total")
    direct: Load = result["direct"]
    minutes = [(m, d) for m, d in zip(load.latencies, direct.latencies, strict=False) if m and d]
    ratios = (
        {
            q: statistics.median(percentile(m, q) / percentile(d, q) for m, d in minutes)
            for q in (50, 99)
        }
        if minutes
        else {50: float("nan"), 99: float("nan")}
    )
    print()
    print(
        f"requests sent {load.sent}, failed {load.failures} {dict(load.errors) or ''}, not sent "
        f"(client backlog) {load.not_sent}; p50 {percentile(every, 50) * 1000:.2f} ms, "
        f"p99 {percentile(every, 99) * 1000:.2f} ms; against the direct control, median of "
        f"per-minute ratios: p50 x{ratios[50]:.2f}, p99 x{ratios[99]:.2f}"
    )
    first = warm[0][1] if warm else float("nan")
    print(
        f"RSS after {args.warmup:g} min warm-up: {first:.1f} -> {result['rss'][-1][1]:.1f} MB, "
        f"slope {slope_mb_per_min(warm):+.2f} MB/min (least squares over {len(warm)} samples); "
        f"peak {result['peak'] / MB:.1f} MB"
    )
    if rows is None:
        print(f"sampled {sampled:.0f}; recording off")
        return
    lost = sampled - rows - dropped
    print(
        f"sampled {sampled:.0f}, rows {rows}, written (metric) {written:.0f}, counted drops "
        f"(dropped, lost, write errors) {dropped:.0f}: records lost {lost:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--sampling", type=float, default=0.2)
    parser.add_argument("--control-rps", type=float, default=10.0, help="direct to the primary")
    parser.add_argument("--candidate-delay", type=float, default=1.0, help="slow candidate, s")
    parser.add_argument("--prompt-bytes", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=None, help="minutes (default: 1/6)")
    parser.add_argument("--every-s", type=float, default=10.0, help="RSS sampling interval")
    parser.add_argument("--no-recording", action="store_true")
    parser.add_argument("--no-scoring", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="config KEY=TOML_VALUE")
    parser.add_argument("--debug", type=Path, help="run the proxy under the debug hook")
    parser.add_argument("--debug-every", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path, help="keep the DuckDB file and logs here")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = min(10.0, args.minutes / 6)

    # A plain `kill` of the benchmark still stops its children (see `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    processes = Processes()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / f"soak-{int(time.time())}.duckdb"
        try:
            primary = processes.role("upstream", "0.001")
            candidate = processes.role("slow-upstream", str(args.candidate_delay))
            command = None
            if args.debug:
                command = [
                    sys.executable,
                    __file__,
                    "--serve-debug",
                    str(args.debug),
                    str(args.debug_every),
                ]
            port, admin = processes.shadowtap(
                build_config(args, primary, candidate, db),
                workdir,
                command,
                stderr=workdir / "proxy.log",
            )
            proxy = processes.children[-1]
            print(
                f"soak: {args.minutes:g} min at {args.rps:g} req/s, sampling {args.sampling:g}, "
                f"slow candidate {args.candidate_delay:g} s, recording "
                f"{'off' if args.no_recording else 'on'}, scoring "
                f"{'off' if args.no_scoring else 'on'}, settings {args.set or 'none'}",
                flush=True,
            )
            import uvloop

            result = uvloop.run(soak(args, port, admin, proxy.pid, primary))
            result["samples"] = uvloop.run(final_metrics(admin, proxy))
            proxy.wait(timeout=120)
        finally:
            processes.stop()
        report(args, result, None if args.no_recording else rows_in(db))


# -- the debug hook: the product's server, observed from inside (benchmark only) ---------------
def serve_debug(out: Path, every_s: float, config_path: str) -> None:
    import tracemalloc

    import uvloop
    from shadowtap.config import load_config
    from shadowtap.log import configure_logging
    from shadowtap.server import ShadowtapServer, tune_gc

    frames = int(os.environ.get("SOAK_TRACEMALLOC_FRAMES", "1"))  # 0: off (it costs CPU)
    if frames:
        tracemalloc.start(frames)
    config = load_config(config_path)
    configure_logging(config.server.log_level)

    async def dump(server: ShadowtapServer) -> None:
        previous = tracemalloc.take_snapshot() if frames else None
        while True:
            await asyncio.sleep(every_s)
            grew = []
            if previous is not None:
                snapshot = tracemalloc.take_snapshot()
                grew = snapshot.compare_to(previous, "traceback")[:12]
                previous = snapshot
            types = Counter(type(o).__name__ for o in gc.get_objects()).most_common(15)
            record: dict[str, Any] = {
                "t": time.time(),
                "rss_kb": memory_kb(os.getpid())[0],
                "traced_bytes": tracemalloc.get_traced_memory()[0],
                "grew": [
                    {
                        "kb": round(s.size_diff / 1024, 1),
                        "count": s.count_diff,
                        "where": [
                            f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in s.traceback
                        ],
                    }
                    for s in grew
                ],
                "types": types,
                "tasks": len(asyncio.all_tasks()),
            }
            # Only if something loaded it: importing it here would add its own RSS to the soak's.
            arrow = sys.modules.get("pyarrow")
            if arrow is not None:
                record["arrow_bytes"] = arrow.total_allocated_bytes()
            if server.recorder is not None:
                record["duckdb"] = await asyncio.to_thread(
                    server.recorder.query,
                    "SELECT tag, memory_usage_bytes FROM duckdb_memory() "
                    "WHERE memory_usage_bytes > 0",
                )
                record["duckdb_limit"] = server.recorder.query(
                    "SELECT current_setting('memory_limit') AS m"
                )[0]["m"]
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        server = ShadowtapServer(config)
        await server.start()
        tune_gc()
        dumper = asyncio.ensure_future(dump(server))
        try:
            await stop.wait()
        finally:
            dumper.cancel()
            await server.stop()

    uvloop.run(main())


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-debug":
        serve_debug(Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
    else:
        main()
