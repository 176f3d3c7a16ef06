"""What Prometheus metrics cost the proxy: throughput with `[server] metrics = true` vs `false`.

Three `shadowtap serve` processes in front of one fast fake upstream (which also serves as the
candidate: 20% of requests are mirrored to it and scored with exact_match, so the shadow and
scoring metrics are exercised too): metrics `on`, metrics `off`, and a second `off` as an A/A
control — what two identical proxies differ by is the noise any on/off difference must be read
against. Each round loads all three at the same time (a closed loop of concurrent clients per
proxy, JSON answers then streamed ones), so whatever else the machine is doing hits them alike;
per-round ratios to `off` are paired, and their medians and ranges printed. The target is
on >= 0.95 x off. Public tools only: aiohttp load, time.perf_counter, statistics, and each
proxy process's CPU time from /proc.

The verdict reads requests per CPU-second of each proxy process (its capacity on a core of
its own); wall-clock requests/s is printed beside it. A run whose A/A control is more than
2.5% from 1 is reported inconclusive. Last, the Metrics calls one request makes are timed
in-process.

    .venv/bin/python bench/metrics.py [--rounds 9] [--duration 2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CHAT,
    PATH,
    STREAM_CHAT,
    Processes,
    closed_loop_count,
    cpu_seconds,
    shadowtap_config,
    wait_ready,
)

TARGET_RATIO = 0.95
SAMPLED_SHARE = 0.2
BODIES = {"json": CHAT, "stream": STREAM_CHAT}
MODES = ("on", "off", "off-again")  # off-again: the A/A control
NOISE_LIMIT = 0.025  # an A/A control further from 1 than this makes the run inconclusive


def proxy_config(upstream: str, metrics: bool) -> dict[str, object]:
    return shadowtap_config(
        upstream,
        {"url": upstream, "model": "bench-small"},
        rate=SAMPLED_SHARE,
        server={"metrics": metrics},
        scorers={"exact": {"type": "exact_match"}},
        storage={"enabled": False},
    )


Results = dict[str, dict[str, dict[str, list[float]]]]  # mode -> body -> figure -> rounds


async def measure(urls: dict[str, str], pids: dict[str, int], args: argparse.Namespace) -> Results:
    """Each round loads the three proxies at the same time, so whatever else the machine is
    doing hits them alike; per proxy: requests answered, and its CPU time over the window."""
    results: Results = {
        mode: {kind: {"rps": [], "per_cpu_s": []} for kind in BODIES} for mode in MODES
    }
    for url in urls.values():
        await wait_ready(url)
        await closed_loop_count(url, CHAT, args.concurrency, 1.0)  # warm connections and caches
    for round_number in range(args.rounds):
        for kind, body in BODIES.items():
            cpu_before = {mode: cpu_seconds(pids[mode]) for mode in MODES}
            counts = await asyncio.gather(
                *(
                    closed_loop_count(urls[mode], body, args.concurrency, args.duration)
                    for mode in MODES
                )
            )
            for mode, (done, elapsed) in zip(MODES, counts, strict=True):
                cpu = cpu_seconds(pids[mode]) - cpu_before[mode]
                results[mode][kind]["rps"].append(done / elapsed)
                results[mode][kind]["per_cpu_s"].append(done / cpu)
        print(
            f"round {round_number + 1}/{args.rounds} (req/CPU-s on / off / off-again): "
            + "  ".join(
                f"{kind} "
                + " / ".join(f"{results[mode][kind]['per_cpu_s'][-1]:.0f}" for mode in MODES)
                for kind in BODIES
            ),
            flush=True,
        )
    return results


def metrics_calls_us(sampled_share: float = SAMPLED_SHARE, repeat: int = 20_000) -> float:
    """Microseconds of Metrics calls one request makes on average, timed in-process."""
    from prometheus_client import CollectorRegistry
    from shadowtap.metrics import Metrics
    from shadowtap.pricing import Prices

    metrics = Metrics(CollectorRegistry(), prices={"candidate": Prices(0.5, 1.5)})
    metrics.prime({"primary": "primary", "candidate": "candidate"}, [PATH])

    def every_request() -> None:
        metrics.observe_sampling(PATH, "sampled")
        metrics.observe_response(PATH, "primary", "primary", 200, 0.2, 0.05)

    def sampled_extra() -> None:
        metrics.shadow_started("candidate")
        metrics.shadow_finished("candidate", "ok")
        metrics.observe_response(PATH, "candidate", "candidate", 200, 0.3, 0.04)
        metrics.observe_usage("candidate", 12, 30)
        metrics.observe_usage("primary", 12, 30)
        metrics.observe_score("candidate", "exact", 1.0, 1.0)

    def per_call_us(function: Callable[[], None]) -> float:
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeat):
                function()
            rounds.append((time.perf_counter() - started) / repeat * 1e6)
        return min(rounds)  # the least-disturbed run: other processes only ever add time

    return per_call_us(every_request) + sampled_share * per_call_us(sampled_extra)


def paired(results: Results, mode: str, kind: str, figure: str) -> list[float]:
    """Per-round ratio of `mode` to `off`, measured seconds apart."""
    return [
        value / base
        for value, base in zip(
            results[mode][kind][figure], results["off"][kind][figure], strict=True
        )
    ]


def report(results: Results) -> str:
    """Print the table and return the verdict: 'within', 'not within' or 'inconclusive'."""
    print(
        f"\n{'answers':<7} {'figure':<20} {'on':>7} {'off':>7} "
        f"{'on/off (range)':>21} {'A/A control (range)':>22}"
    )
    verdicts: dict[str, str] = {}
    for kind in BODIES:
        for figure, label in (("rps", "requests/s (wall)"), ("per_cpu_s", "requests/CPU-second")):
            on = statistics.median(results["on"][kind][figure])
            off = statistics.median(results["off"][kind][figure])
            ratios = paired(results, "on", kind, figure)
            control = paired(results, "off-again", kind, figure)
            ratio, noise = statistics.median(ratios), statistics.median(control)
            print(
                f"{kind:<7} {label:<20} {on:>7.0f} {off:>7.0f} "
                f"{ratio:>7.3f} ({min(ratios):.2f}-{max(ratios):.2f}) "
                f"{noise:>9.3f} ({min(control):.2f}-{max(control):.2f})"
            )
            if figure != "per_cpu_s":
                continue
            # The verdict reads requests per CPU-second, and only when the A/A control is quiet.
            if abs(noise - 1) > NOISE_LIMIT:
                verdicts[kind] = f"inconclusive (A/A control {noise:.3f}: the machine is too busy)"
            else:
                verdicts[kind] = "within" if ratio >= TARGET_RATIO else "NOT within"
    calls_us = metrics_calls_us()
    per_request_us = 1e6 / statistics.median(results["off"]["json"]["per_cpu_s"])
    print(
        f"\nMetrics calls per request (in-process, {SAMPLED_SHARE:.0%} sampled): {calls_us:.1f} µs"
        f" = {calls_us / per_request_us:.2%} of the proxy's {per_request_us:.0f} µs CPU per request"
    )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs")
    for kind, verdict in verdicts.items():
        print(
            f"{kind}: metrics on is {verdict}"
            + (" 5% of metrics off" if "within" in verdict else "")
        )
    if any(verdict == "NOT within" for verdict in verdicts.values()):
        return "not within"
    if any(verdict == "within" for verdict in verdicts.values()):
        return "within"
    return "inconclusive"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            upstream = processes.role("upstream")
            urls, pids = {}, {}
            for mode in MODES:
                port, _ = processes.shadowtap(proxy_config(upstream, mode == "on"), Path(workdir))
                urls[mode] = f"http://127.0.0.1:{port}{PATH}"
                pids[mode] = processes.children[-1].pid
            import uvloop

            results = uvloop.run(measure(urls, pids, args))
    finally:
        processes.stop()
    return 1 if report(results) == "not within" else 0


if __name__ == "__main__":
    sys.exit(main())
