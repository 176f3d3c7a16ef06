"""Does scoring slow the primary path? Proxy latency with and without `text_similarity`.

Two `shadowtap serve` processes in front of the same fake upstreams, both mirroring 100% of
requests to a candidate; one also scores every pair with `text_similarity`. Answers are ~10 kB
(the candidate's differs in a tenth of its words, so the scorer does real work). An open-loop
load generator sends requests at a fixed rate to each proxy in interleaved rounds and records
every request's latency; the script prints medians over rounds and the scoring-on/off ratios
measured in the same run, plus how many pairs were scored (from /metrics) to show that scoring
really ran at 100%.

    .venv/bin/python bench/scoring.py [--rounds 5] [--rate 100] [--duration 4] [--control]
        [--processes 2]
    .venv/bin/python bench/scoring.py --hop [--exchanges 300]

`--control` makes both proxies score nothing (an A/A run): the spread of its ratios is the
machine's noise, to read the real run against. `--processes` is `server.scoring_processes`.

`--hop` measures the scoring workers themselves, in this process: a worker's start-up (wall
and CPU time until it is ready), its resident memory once started and after scoring, and what
the process hop costs per exchange — `ScoringRunner.score` wall time and this process's CPU
time per exchange with worker processes, against the scorers called in a thread pool (the
old way, whose CPU time is the scoring itself, spent under the proxy's GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CHAT,
    PATH,
    Processes,
    cpu_seconds,
    long_answer_text,
    metric_total,
    open_loop,
    percentile,
    shadowtap_config,
    wait_ready,
)

SCORED = "shadowtap_agreement_score_count"
SKIPPED = "shadowtap_scorer_skipped_total"


async def measure(
    urls: dict[str, str], args: argparse.Namespace
) -> dict[str, dict[str, list[float]]]:
    results = {name: {"p50": [], "p99": [], "max": []} for name in urls}
    names = list(urls)
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]  # no side always goes first
        for name in order:
            latencies = await open_loop(urls[name], CHAT, args.rate, args.duration)
            results[name]["p50"].append(percentile(latencies, 50) * 1000)
            results[name]["p99"].append(percentile(latencies, 99) * 1000)
            results[name]["max"].append(max(latencies) * 1000)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    return results


def scorer_cost_ms() -> float:
    """What one 10 kB pair costs text_similarity here, the work moved off the event loop."""
    from shadowtap.completion import Completion
    from shadowtap.scorers.base import Pair
    from shadowtap.scorers.registry import build_scorers, resolve_scorers

    scorer = build_scorers(resolve_scorers({"similarity": {"type": "text_similarity"}}))[0]
    primary = Completion(status=200, text=long_answer_text("primary", 1))
    target = Completion(status=200, text=long_answer_text("candidate", 1))
    pair = Pair(None, primary, target, "candidate", "candidate")
    timings = []
    for _ in range(50):
        started = time.perf_counter()
        scorer.score(pair)  # type: ignore[call-arg]
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def report(
    results: dict[str, dict[str, list[float]]], pairs: float, skipped: float, sent: int
) -> None:
    print(f"{'scoring':<10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}   (medians over rounds)")
    for name, figures in results.items():
        med = {k: statistics.median(v) for k, v in figures.items()}
        print(f"{name:<10}{med['p50']:>10.2f}{med['p99']:>10.2f}{med['max']:>10.2f}")
    for stat in ("p50", "p99"):
        ratios = [
            on / off for on, off in zip(results["on"][stat], results["off"][stat], strict=True)
        ]
        print(
            f"{stat} on/off: median of per-round ratios {statistics.median(ratios):.3f}x "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
        )
    print(
        f"pairs scored by text_similarity: {pairs:.0f} of {sent} requests sent to 'on' "
        f"({skipped:.0f} skipped: queue full or over the size bound)"
    )
    print(f"text_similarity on one 10 kB pair: {scorer_cost_ms():.2f} ms (median, this process)")


HOP_SCORERS = {
    "similarity": {"type": "text_similarity"},
    "exact": {"type": "exact_match"},
    "length": {"type": "length_ratio"},
    "refusal": {"type": "refusal"},
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure_hop(exchanges: int) -> None:
    import aiohttp
    from shadowtap.completion import Completion
    from shadowtap.metrics import Metrics
    from shadowtap.scorers.base import CpuScorer
    from shadowtap.scorers.pool import CpuSettings, WorkerPool
    from shadowtap.scorers.registry import build_scorers, resolve_scorers
    from shadowtap.scorers.runner import ScoringRunner

    from tests.exchanges import chat_exchange

    scorers = build_scorers(resolve_scorers(HOP_SCORERS))
    cpu: list[CpuScorer[Any]] = [s for s in scorers if isinstance(s, CpuScorer)]
    boots, boot_cpu = [], []
    for _ in range(5):
        pool = WorkerPool(cpu, processes=1, queue_max=1)
        started = time.perf_counter()
        pool.start()
        while not pool._alive:  # noqa: ASYNC110 - polling the pool from outside, a bench only
            await asyncio.sleep(0.002)
        boots.append(time.perf_counter() - started)
        (worker,) = pool._alive
        boot_cpu.append(cpu_seconds(worker.process.pid))
        booted_rss = rss_mb(worker.process.pid)
        await pool.close()
    print(
        f"worker start-up: {statistics.median(boots) * 1000:.0f} ms wall, "
        f"{statistics.median(boot_cpu) * 1000:.0f} ms CPU (median of 5); "
        f"RSS once ready {booted_rss:.1f} MB"
    )

    texts = [(long_answer_text("primary", i), long_answer_text("candidate", i)) for i in range(8)]

    def exchange(index: int) -> Any:
        primary, candidate = texts[index % 8]
        answers = {
            "primary": Completion(status=200, text=primary),
            "candidate": Completion(status=200, text=candidate),
        }
        return chat_exchange(answers, request_id=f"r{index}")

    lags: list[float] = []

    async def lag_probe() -> None:
        """The event loop's lateness waking a 1 ms sleep: what scoring costs everyone else."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - started - 0.001)

    async def timed(score: Any, items: list[Any]) -> tuple[list[float], float, list[float]]:
        """Wall time per exchange and loop lag (with the probe on), then this process's CPU
        time per exchange in a second pass without the probe's own wake-ups."""
        nonlocal lags
        lags = []
        probe = asyncio.ensure_future(lag_probe())
        timings = []
        for item in items:
            started = time.perf_counter()
            await score(item)
            timings.append(time.perf_counter() - started)
        probe.cancel()
        cpu_start = time.process_time()
        for item in items:
            await score(item)
        return timings, (time.process_time() - cpu_start) / len(items), lags

    batch = [exchange(i) for i in range(exchanges)]
    async with aiohttp.ClientSession() as session:
        runner = ScoringRunner(scorers, Metrics(), session, CpuSettings(processes=2))
        await runner.score(exchange(0))  # both workers started and warm
        await runner.score(exchange(1))
        hop, hop_cpu, hop_lags = await timed(runner.score, batch)
        assert runner.pool is not None
        worker_rss = [rss_mb(w.process.pid) for w in runner.pool._alive]
        await runner.close()

    loop = asyncio.get_running_loop()
    planned = {id(item): ScoringRunner.pairs(runner, item) for item in batch}
    with concurrent.futures.ThreadPoolExecutor(2) as executor:

        async def in_threads(item: Any) -> None:
            pairs = planned[id(item)]
            await loop.run_in_executor(executor, lambda: [s.score(x) for s, x in pairs])

        threads, thread_cpu, thread_lags = await timed(in_threads, batch)

    def line(name: str, timings: list[float], cpu_s: float, lag: list[float]) -> str:
        return (
            f"{name:<22}{statistics.median(timings) * 1000:>8.2f}"
            f"{percentile(timings, 99) * 1000:>9.2f}{cpu_s * 1000:>14.2f}"
            f"{percentile(lag, 99) * 1000:>14.2f}{max(lag) * 1000:>12.2f}"
        )

    print(f"per exchange, {len(cpu)} CPU scorers on a 10 kB pair, {exchanges} exchanges:")
    heads = ("p50 ms", "p99 ms", "proxy CPU ms", "loop lag p99", "lag max ms")
    print(f"{'':<22}{heads[0]:>8}{heads[1]:>9}{heads[2]:>14}{heads[3]:>14}{heads[4]:>12}")
    print(line("worker processes (2)", hop, hop_cpu, hop_lags))
    print(line("thread pool (old)", threads, thread_cpu, thread_lags))
    print(f"worker RSS after scoring: {', '.join(f'{r:.1f} MB' for r in worker_rss)}")
    print(f"this process: pid {os.getpid()}, RSS {rss_mb(os.getpid()):.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--processes", type=int, default=0, help="server.scoring_processes")
    parser.add_argument("--hop", action="store_true", help="measure the workers, not a proxy")
    parser.add_argument("--exchanges", type=int, default=300, help="with --hop")
    parser.add_argument(
        "--control",
        action="store_true",
        help="A/A run: 'on' scores nothing either, to see the noise of this machine's ratios",
    )
    args = parser.parse_args()
    if args.hop:
        asyncio.run(measure_hop(args.exchanges))
        return

    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            primary = processes.role("long-upstream", "primary")
            candidate = processes.role("long-upstream", "candidate")
            base = shadowtap_config(
                primary, {"url": candidate}, rate=1.0, max_inflight=1000, storage={"enabled": False}
            )
            off, _ = processes.shadowtap(base, Path(workdir))
            on, on_admin = processes.shadowtap(
                base
                if args.control
                else {
                    **base,
                    "server": {**base["server"], "scoring_processes": args.processes},
                    "scorers": {"similarity": {"type": "text_similarity"}},
                },
                Path(workdir),
            )
            urls = {"off": f"http://127.0.0.1:{off}{PATH}", "on": f"http://127.0.0.1:{on}{PATH}"}

            async def run() -> tuple[dict[str, dict[str, list[float]]], float, float]:
                for url in urls.values():
                    await wait_ready(url)
                await asyncio.sleep(2)  # the warm-up request's pair is scored by now
                warm = await metric_total(on_admin, SCORED)
                results = await measure(urls, args)
                await asyncio.sleep(2)  # let the last shadows and scores finish
                pairs = await metric_total(on_admin, SCORED) - warm
                return results, pairs, await metric_total(on_admin, SKIPPED)

            import uvloop

            results, pairs, skipped = uvloop.run(run())
            report(results, pairs, skipped, int(args.rate * args.duration) * args.rounds)
    finally:
        processes.stop()


if __name__ == "__main__":
    main()
