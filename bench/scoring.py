"""Does scoring slow the primary path? Proxy latency with and without `text_similarity`.

Two `shadowtap serve` processes in front of the same fake upstreams, both mirroring 100% of
requests to a candidate; one also scores every pair with `text_similarity`. Answers are ~10 kB
(the candidate's differs in a tenth of its words, so the scorer does real work). An open-loop
load generator sends requests at a fixed rate to each proxy in interleaved rounds and records
every request's latency; the script prints medians over rounds and the scoring-on/off ratios
measured in the same run, plus how many pairs were scored (from /metrics) to show that scoring
really ran at 100%.

    .venv/bin/python bench/scoring.py [--rounds 5] [--rate 100] [--duration 4] [--control]

`--control` makes both proxies score nothing (an A/A run): the spread of its ratios is the
machine's noise, to read the real run against.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CHAT,
    PATH,
    Processes,
    long_answer_text,
    metric_total,
    open_loop,
    percentile,
    shadowtap_config,
    wait_ready,
)

SCORED = "shadowtap_agreement_score_count"


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
    from shadowtap.scorers.registry import build_scorers

    scorer = build_scorers({"similarity": {"type": "text_similarity"}})[0]
    primary = Completion(status=200, text=long_answer_text("primary", 1))
    target = Completion(status=200, text=long_answer_text("candidate", 1))
    pair = Pair(None, primary, target, "candidate", "candidate")
    timings = []
    for _ in range(50):
        started = time.perf_counter()
        scorer.score(pair)  # type: ignore[call-arg]
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def report(results: dict[str, dict[str, list[float]]], pairs: float, sent: int) -> None:
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
    print(f"pairs scored by text_similarity: {pairs:.0f} of {sent} requests sent to 'on'")
    print(f"text_similarity on one 10 kB pair: {scorer_cost_ms():.2f} ms (median, this process)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument(
        "--control",
        action="store_true",
        help="A/A run: 'on' scores nothing either, to see the noise of this machine's ratios",
    )
    args = parser.parse_args()

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
                else {**base, "scorers": {"similarity": {"type": "text_similarity"}}},
                Path(workdir),
            )
            urls = {"off": f"http://127.0.0.1:{off}{PATH}", "on": f"http://127.0.0.1:{on}{PATH}"}

            async def run() -> tuple[dict[str, dict[str, list[float]]], float]:
                for url in urls.values():
                    await wait_ready(url)
                await asyncio.sleep(0.5)  # the warm-up request's pair is scored by now
                warm = await metric_total(on_admin, SCORED)
                results = await measure(urls, args)
                await asyncio.sleep(1)  # let the last shadows and scores finish
                return results, await metric_total(on_admin, SCORED) - warm

            import uvloop

            results, pairs = uvloop.run(run())
            report(results, pairs, int(args.rate * args.duration) * args.rounds)
    finally:
        processes.stop()


if __name__ == "__main__":
    main()
