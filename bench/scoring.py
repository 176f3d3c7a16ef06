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
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson
from aiohttp import web

from bench.harness import CHAT, Processes, percentile, wait_ready
from proxy.tasks import TaskSet

PATH = "/v1/chat/completions"
ANSWER_BYTES = 10_000
UPSTREAM_DELAY_S = 0.005  # a little think time, so the fake is not faster than any real model


def answer_text(variant: str, seed: int) -> str:
    """~10 kB of words; the candidate's answer changes every tenth word of the primary's."""
    rng = random.Random(seed)
    words: list[str] = []
    size = 0
    while size < ANSWER_BYTES:
        word = f"{rng.choice(['model', 'answer', 'token', 'proxy', 'shadow'])}{rng.randint(0, 999)}"
        words.append(word)
        size += len(word) + 1
    if variant == "candidate":
        words = [w if i % 10 else f"changed{i}" for i, w in enumerate(words)]
    return " ".join(words)


def upstream_app(variant: str) -> web.Application:
    # A handful of distinct answers, prebuilt: the fake must cost next to nothing per request.
    bodies = [
        orjson.dumps(
            {
                "id": f"chatcmpl-{seed}",
                "object": "chat.completion",
                "created": 1,
                "model": "bench",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer_text(variant, seed)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 1700, "total_tokens": 1712},
            }
        )
        for seed in range(8)
    ]
    count = 0

    async def chat(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        await asyncio.sleep(UPSTREAM_DELAY_S)
        count += 1
        return web.Response(body=bodies[count % len(bodies)], content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, chat)
    return app


def run_role(argv: list[str]) -> None:
    import uvloop

    variant, port = argv[0], int(argv[1])
    uvloop.install()
    web.run_app(upstream_app(variant), host="127.0.0.1", port=port, access_log=None, print=None)


async def open_loop(url: str, rate: float, duration_s: float) -> list[float]:
    """Send at a fixed rate whatever the answers' pace (a closed loop would slow down with the
    proxy and hide its stalls); return every request's latency in seconds."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal failures
            started = time.perf_counter()
            async with session.post(url, data=CHAT) as response:
                await response.read()
                if response.status != 200:
                    failures += 1
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


async def scored_pairs(admin_port: int) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
            text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("shadowtap_agreement_score_count{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def measure(
    urls: dict[str, str], args: argparse.Namespace
) -> dict[str, dict[str, list[float]]]:
    results = {name: {"p50": [], "p99": [], "max": []} for name in urls}
    names = list(urls)
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]  # no side always goes first
        for name in order:
            latencies = await open_loop(urls[name], args.rate, args.duration)
            results[name]["p50"].append(percentile(latencies, 50) * 1000)
            results[name]["p99"].append(percentile(latencies, 99) * 1000)
            results[name]["max"].append(max(latencies) * 1000)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    return results


def scorer_cost_ms() -> float:
    """What one 10 kB pair costs text_similarity here, the work moved off the event loop."""
    from proxy.completion import Completion
    from scorers.base import Pair
    from scorers.registry import build_scorers

    scorer = build_scorers({"similarity": {"type": "text_similarity"}})[0]
    primary = Completion(status=200, text=answer_text("primary", 1))
    target = Completion(status=200, text=answer_text("candidate", 1))
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
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        run_role(sys.argv[2:])
        return
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
            script = str(Path(__file__).resolve())
            primary = f"http://127.0.0.1:{processes.role(script, 'primary')}"
            candidate = f"http://127.0.0.1:{processes.role(script, 'candidate')}"
            base = {
                "server": {"log_level": "warning"},
                "primary": {"url": primary},
                "sampling": {"rate": 1.0, "max_per_second": 0, "max_inflight": 1000},
                "candidates": {"candidate": {"url": candidate}},
                "storage": {"enabled": False},
            }
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
                warm = await scored_pairs(on_admin)
                results = await measure(urls, args)
                await asyncio.sleep(1)  # let the last shadows and scores finish
                return results, await scored_pairs(on_admin) - warm

            import uvloop

            results, pairs = uvloop.run(run())
            report(results, pairs, int(args.rate * args.duration) * args.rounds)
    finally:
        processes.stop()


if __name__ == "__main__":
    main()
