"""Replay cost: 10,000 recorded requests replayed to a fake candidate, requests/s and CPU.

    .venv/bin/python bench/replay.py [--requests 10000] [--concurrency 32] [--think 0.05]
        [--runs 3] [--no-scorers] [--fast-only]

A DuckDB file gets `--requests` recorded exchanges (`tests.synthetic`, every fifth
streamed) through the real Recorder. Then, in each of `--runs` rounds, for two fake candidates
each in its own process — the fast one (answers at once) and a model-like one (`--think`
seconds before answering):

* the candidate alone: a bare aiohttp client, `--concurrency` requests back to back;
* the replay: `ReplayRunner` in this process (claims, pacing, the call, text_similarity
  scoring, storing) on a fresh copy of the file, timed from start to the last answer stored;
  `--no-scorers` replays without scorers (what the replay costs beside scoring).

Over the replay's span the CPU time of each side is read: this process (every thread: event
loop, database threads), its scoring workers (child processes, counted once reaped at the end
of the run) and the fake candidate's process. The replay's rate beside the candidate's rate
alone, and the CPU split, say which side bounds it. Medians over the rounds are printed last.
Figures and what bounds them: docs/benchmarks.md ("Replay").
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig, parse_config
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from bench.harness import CHAT, PATH, Processes, closed_loop, cpu_seconds, wait_ready
from tests.synthetic import synthetic_exchange

CORES = 2  # the machine the figures in docs/benchmarks.md were measured on


@dataclass(frozen=True, slots=True)
class Round:
    alone: float  # the candidate's req/s with a bare client
    replay: float  # the replay's req/s
    main_ms: float  # CPU per request: this process (event loop and database threads)
    workers_ms: float  # ... its scoring workers
    fake_ms: float  # ... the fake candidate
    wall_s: float

    @property
    def ratio(self) -> float:
        return self.replay / self.alone

    def line(self) -> str:
        total = self.main_ms + self.workers_ms + self.fake_ms
        busy = total * self.replay / 1000  # cores kept busy by the three
        return (
            f"alone {self.alone:,.0f} req/s; replay {self.replay:,.0f} req/s ({self.ratio:.0%});"
            f" CPU per request: shadowtap {self.main_ms:.2f} ms + scoring workers"
            f" {self.workers_ms:.2f} ms, fake {self.fake_ms:.2f} ms ({busy:.2f} of {CORES}"
            f" cores busy; {self.wall_s:.1f} s)"
        )


def record(path: Path, count: int) -> None:
    storage = StorageConfig(path=str(path), bodies="redacted", queue_max=count + 1)
    recorder = Recorder(storage, Metrics(CollectorRegistry()))
    recorder.start()
    for i in range(count):
        recorder.record(synthetic_exchange(i, stream=i % 5 == 0))
    recorder.close(timeout_s=600)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def replay(
    db: Path, url: str, concurrency: int, fake_pid: int, alone: float, scorers: bool = True
) -> Round:
    """One round's replay, beside `alone`: the candidate's rate with a bare client."""
    config = parse_config(
        {
            "primary": {"url": "http://127.0.0.1:9"},  # never called: the answer is recorded
            "candidates": {"fresh": {"url": url, "timeout_s": 60}},
            "scorers": {"similarity": {"type": "text_similarity"}} if scorers else {},
            "storage": {"path": str(db)},
        },
        {},
    )
    runner = ReplayRunner(
        config, ReplayOptions("fresh", concurrency=concurrency, progress=False), db
    )
    cpu, workers, fake = time.process_time(), children_cpu_s(), cpu_seconds(fake_pid)
    wall = time.perf_counter()
    summary = await runner.run()  # the scoring workers are reaped before it returns
    wall = time.perf_counter() - wall
    cpu, workers = time.process_time() - cpu, children_cpu_s() - workers
    fake = cpu_seconds(fake_pid) - fake
    if not summary.complete or summary.counts.errors:
        raise RuntimeError(summary.paragraph())
    n = summary.recorded
    per = 1000 / n
    return Round(alone, n / wall, cpu * per, workers * per, fake * per, wall)


def median_round(rounds: list[Round]) -> Round:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    return Round(
        med([r.alone for r in rounds]),
        med([r.replay for r in rounds]),
        med([r.main_ms for r in rounds]),
        med([r.workers_ms for r in rounds]),
        med([r.fake_ms for r in rounds]),
        med([r.wall_s for r in rounds]),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--think", type=float, default=0.05, help="the model-like fake's delay")
    parser.add_argument("--runs", type=int, default=3, help="rounds; medians are printed last")
    parser.add_argument("--no-scorers", action="store_true", help="replay without scorers")
    parser.add_argument("--fast-only", action="store_true", help="skip the model-like fake")
    args = parser.parse_args()
    processes = Processes()
    candidates = (
        ("fast fake (answers at once)", "upstream", ""),
        (f"model-like fake ({args.think * 1000:.0f} ms)", "slow-upstream", str(args.think)),
    )
    if args.fast_only:
        candidates = candidates[:1]
    results: dict[str, list[Round]] = {label: [] for label, _, _ in candidates}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"recording {args.requests:,} exchanges ...", flush=True)
            template = Path(tmp) / "recorded.duckdb"
            record(template, args.requests)
            fakes = {}
            for label, role, arg in candidates:
                url = processes.role(role, arg)
                fakes[label] = (url, processes.children[-1].pid)
                await wait_ready(url + PATH)
            for run in range(1, args.runs + 1):
                for label, _, _ in candidates:
                    url, pid = fakes[label]
                    alone = await closed_loop(url + PATH, CHAT, args.concurrency, 3.0)
                    db = Path(tmp) / "replay.duckdb"
                    db.write_bytes(template.read_bytes())
                    scorers = not args.no_scorers
                    result = await replay(db, url, args.concurrency, pid, alone, scorers)
                    results[label].append(result)
                    print(f"run {run}, {label}: {result.line()}", flush=True)
            scoring = "no scorers" if args.no_scorers else "text_similarity"
            print(f"medians of {args.runs} (concurrency {args.concurrency}, {scoring}):")
            for label, rounds in results.items():
                print(f"  {label}: {median_round(rounds).line()}", flush=True)
    finally:
        processes.stop()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
