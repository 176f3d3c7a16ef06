"""What shadowtap costs the primary path, measured against baselines in the same run.

Three ways to reach one fast fake upstream on loopback, measured in interleaved rounds:
  direct     the client calls the upstream itself
  bare       a minimal aiohttp streaming pass-through (bench/harness.py)
  shadowtap  `shadowtap serve` with 10% of requests mirrored to a candidate

For each: throughput under a closed loop of concurrent clients, p50/p99 latency of sequential
requests, and time to first chunk of streamed answers. Medians over rounds are printed, with
shadowtap's ratio to the bare pass-through (target: ≥ 0.8x throughput, ≤ 1 ms added p50).

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
    closed_loop,
    percentile,
    sequential,
    shadowtap_config,
    wait_ready,
)


async def measure(urls: dict[str, str], args: argparse.Namespace) -> dict[str, dict[str, list]]:
    results: dict[str, dict[str, list]] = {
        name: {"rps": [], "p50": [], "p99": [], "ttft": []} for name in urls
    }
    names = list(urls)
    for round_index in range(args.rounds):
        # Rotate the order each round so drift in machine speed does not favour one target.
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            url = urls[name]
            rps = await closed_loop(url, CHAT, args.concurrency, args.duration)
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
        name: {k: statistics.median(v) for k, v in figures.items()}
        for name, figures in results.items()
    }
    print(f"{'target':<11}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'stream 1st chunk ms':>22}")
    for name, m in med.items():
        print(f"{name:<11}{m['rps']:>10.0f}{m['p50']:>10.3f}{m['p99']:>10.3f}{m['ttft']:>22.3f}")
    tap, bare, direct = med["shadowtap"], med["bare"], med["direct"]
    ratios = [
        t / b for t, b in zip(results["shadowtap"]["rps"], results["bare"]["rps"], strict=True)
    ]
    print()
    print(
        f"throughput shadowtap/bare: median of per-round ratios {statistics.median(ratios):.2f}x"
        f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.80x)"
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

            async def run() -> dict[str, dict[str, list]]:
                for url in urls.values():
                    await wait_ready(url)
                return await measure(urls, args)

            import uvloop

            report(uvloop.run(run()))
    finally:
        processes.stop()


if __name__ == "__main__":
    main()
