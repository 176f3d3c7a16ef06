"""What shadowtap costs the primary path, measured against baselines in the same run.

Three ways to reach one fast fake upstream on loopback, measured in interleaved rounds:
  direct     the client calls the upstream itself
  bare       a minimal aiohttp streaming pass-through (bench/harness.py)
  shadowtap  `shadowtap serve` with 10% of requests mirrored to a candidate

For each: throughput under a closed loop of concurrent clients, p50/p99 latency of sequential
requests, and time to first chunk of streamed answers. Medians over rounds are printed, with
shadowtap's ratio to the bare pass-through (target: ≥ 0.8x throughput, ≤ 1 ms added p50).

Throughput is given two ways. Wall-clock requests/s measures the whole machine: on two shared
cores the client and the upstreams compete with the proxy, so its ratio swings with whatever
else runs. Requests per CPU-second of the proxy process (from /proc) is the proxy's own
capacity, and is the figure the target is read against.

    .venv/bin/python bench/overhead.py [--rounds 5] [--duration 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CHAT,
    PATH,
    STREAM_CHAT,
    Processes,
    closed_loop_count,
    cpu_seconds,
    percentile,
    sequential,
    shadowtap_config,
    wait_ready,
)


async def measure(
    urls: dict[str, str], pids: dict[str, int], args: argparse.Namespace
) -> dict[str, dict[str, list]]:
    results: dict[str, dict[str, list]] = {
        name: {"rps": [], "per_cpu_s": [], "p50": [], "p99": [], "ttft": []} for name in urls
    }
    names = list(urls)
    for round_index in range(args.rounds):
        # Rotate the order each round so drift in machine speed does not favour one target.
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            url = urls[name]
            cpu_before = cpu_seconds(pids[name]) if name in pids else 0.0
            done, seconds = await closed_loop_count(url, CHAT, args.concurrency, args.duration)
            rps = done / seconds
            if name in pids:
                results[name]["per_cpu_s"].append(done / (cpu_seconds(pids[name]) - cpu_before))
            totals, _ = await sequential(url, CHAT, args.requests)
            _, firsts = await sequential(url, STREAM_CHAT, args.requests // 2)
            results[name]["rps"].append(rps)
            results[name]["p50"].append(percentile(totals, 50) * 1000)
            results[name]["p99"].append(percentile(totals, 99) * 1000)
            results[name]["ttft"].append(percentile(firsts, 50) * 1000)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    return results


def report(results: dict[str, dict[str, list]]) -> None:
    med = {
        name: {k: statistics.median(v) if v else float("nan") for k, v in figures.items()}
        for name, figures in results.items()
    }
    print(
        f"{'target':<11}{'req/s':>10}{'req/CPU-s':>11}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'stream 1st chunk ms':>22}"
    )
    for name, m in med.items():
        print(
            f"{name:<11}{m['rps']:>10.0f}{m['per_cpu_s']:>11.0f}{m['p50']:>10.3f}"
            f"{m['p99']:>10.3f}{m['ttft']:>22.3f}"
        )
    tap, bare, direct = med["shadowtap"], med["bare"], med["direct"]
    ratios = [
        t / b for t, b in zip(results["shadowtap"]["rps"], results["bare"]["rps"], strict=True)
    ]
    capacity = [
        t / b
        for t, b in zip(
            results["shadowtap"]["per_cpu_s"], results["bare"]["per_cpu_s"], strict=True
        )
    ]
    print()
    print(
        f"capacity shadowtap/bare (requests per proxy CPU-second): median of per-round ratios "
        f"{statistics.median(capacity):.2f}x (rounds: {', '.join(f'{r:.2f}' for r in capacity)};"
        " target >= 0.80x)"
    )
    print(
        f"wall throughput shadowtap/bare: median of per-round ratios "
        f"{statistics.median(ratios):.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)}; "
        "the whole machine, see above)"
    )
    print(
        f"added p50 latency vs direct: shadowtap {tap['p50'] - direct['p50']:+.3f} ms, "
        f"bare {bare['p50'] - direct['p50']:+.3f} ms; vs bare {tap['p50'] - bare['p50']:+.3f} ms"
        " (target <= 1 ms)"
    )
    print(f"added p99 latency vs direct: shadowtap {tap['p99'] - direct['p99']:+.3f} ms")
    print(
        f"added time to first streamed chunk vs direct: shadowtap "
        f"{tap['ttft'] - direct['ttft']:+.3f} ms, bare {bare['ttft'] - direct['ttft']:+.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per round")
    parser.add_argument("--shadow-rate", type=float, default=0.1)
    args = parser.parse_args()

    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            upstream = processes.role("upstream", "0.001")
            candidate = processes.role("upstream", "0.001")
            bare = processes.role("bare", upstream)
            bare_pid = processes.children[-1].pid
            tap, _ = processes.shadowtap(
                shadowtap_config(
                    upstream, {"url": candidate}, rate=args.shadow_rate, storage={"enabled": False}
                ),
                Path(workdir),
            )
            urls = {
                "direct": upstream + PATH,
                "bare": bare + PATH,
                "shadowtap": f"http://127.0.0.1:{tap}{PATH}",
            }

            pids = {"bare": bare_pid, "shadowtap": processes.children[-1].pid}

            async def run() -> dict[str, dict[str, list]]:
                for url in urls.values():
                    await wait_ready(url)
                return await measure(urls, pids, args)

            import uvloop

            report(uvloop.run(run()))
    finally:
        processes.stop()


if __name__ == "__main__":
    main()
