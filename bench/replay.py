"""Replay cost: 10,000 recorded requests replayed to a fake candidate, requests/s and CPU.

    .venv/bin/python bench/replay.py [--requests 10000] [--concurrency 32] [--think 0.05]

A DuckDB file gets `--requests` recorded exchanges (`shadowtap.recorder.synthetic`, every fifth
streamed) through the real Recorder. Then, for two fake candidates each in its own process —
the fast one (answers at once) and a model-like one (`--think` seconds before answering):

* the candidate's ceiling: a bare aiohttp client, `--concurrency` requests back to back;
* the replay: `ReplayRunner` in this process (claims, pacing, the call, text_similarity
  scoring, storing), timed from start to the last answer stored, with this process's CPU
  time over the same span (every thread: event loop, database and scorer threads).

The replay's rate beside the candidate's ceiling says which side bounds it; shadowtap's own cost
is the CPU per request. Figures and what bounds them: docs/benchmarks.md ("Replay").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig, parse_config
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder
from shadowtap.recorder.synthetic import synthetic_exchange
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from bench.harness import CHAT, PATH, Processes, closed_loop, wait_ready


def record(path: Path, count: int) -> None:
    storage = StorageConfig(path=str(path), bodies="redacted", queue_max=count + 1)
    recorder = Recorder(storage, Metrics(CollectorRegistry()))
    recorder.start()
    for i in range(count):
        recorder.record(synthetic_exchange(i, stream=i % 5 == 0))
    recorder.close(timeout_s=600)


async def replay(db: Path, url: str, concurrency: int) -> tuple[int, float, float]:
    """(answers stored, wall seconds, CPU seconds of this process)."""
    config = parse_config(
        {
            "primary": {"url": "http://127.0.0.1:9"},  # never called: the answer is recorded
            "candidates": {"fresh": {"url": url, "timeout_s": 60}},
            "scorers": {"similarity": {"type": "text_similarity"}},
            "storage": {"path": str(db)},
        },
        {},
    )
    runner = ReplayRunner(
        config, ReplayOptions("fresh", concurrency=concurrency, progress=False), db
    )
    cpu, wall = time.process_time(), time.perf_counter()
    summary = await runner.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if not summary.complete or summary.counts.errors:
        raise RuntimeError(summary.paragraph())
    return summary.recorded, wall, cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--think", type=float, default=0.05, help="the model-like fake's delay")
    args = parser.parse_args()
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"recording {args.requests:,} exchanges ...", flush=True)
            template = Path(tmp) / "recorded.duckdb"
            record(template, args.requests)
            for label, role, arg in (
                ("fast fake (answers at once)", "upstream", ""),
                (f"model-like fake ({args.think * 1000:.0f} ms)", "slow-upstream", str(args.think)),
            ):
                url = processes.role(role, arg)
                await wait_ready(url + PATH)
                ceiling = await closed_loop(url + PATH, CHAT, args.concurrency, 3.0)
                db = Path(tmp) / f"{role}.duckdb"
                db.write_bytes(template.read_bytes())
                stored, wall, cpu = await replay(db, url, args.concurrency)
                print(
                    f"{label}: candidate alone {ceiling:,.0f} req/s; replay {stored / wall:,.0f}"
                    f" req/s ({stored / wall / ceiling:.0%} of it), shadowtap CPU"
                    f" {cpu / stored * 1000:.2f} ms per request ({stored:,} answers in"
                    f" {wall:.1f} s, concurrency {args.concurrency})",
                    flush=True,
                )
    finally:
        processes.stop()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
