"""Recorder cost: rows/s sustained into DuckDB, and proxy throughput with recording on vs off.

    .venv/bin/python bench/recorder.py [--exchanges 10000] [--runs 5] [--bodies redacted]
                                       [--rounds 15] [--duration 1] [--skip-writer|--skip-proxy]

Writer: one exchange = 1 exchanges row + 3 responses + 4 scores = 8 rows
(`tests.synthetic`). A run records every exchange as fast as `record()` accepts them
(the queue holds them all, so nothing is dropped) and stops the clock when the writer has
committed the last one; the closing checkpoint is timed separately. Median of the runs.

Proxy: two `shadowtap serve` processes in front of the same fast fake upstream, each mirroring
100% of requests to a fake candidate, one with storage on (bodies redacted) and one with
`storage.enabled = false`; closed-loop throughput in interleaved rounds, median of the
per-round ratios (target: recording on >= 0.90x of off).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly

from bench.harness import (
    CHAT,
    PATH,
    Processes,
    closed_loop,
    metric_total,
    shadowtap_config,
    wait_ready,
)
from tests.synthetic import synthetic_exchange

ROWS_PER_EXCHANGE = 8
TARGET_ROWS_PER_S = 100_000  # issue 15: with redaction
TARGET_PROXY_RATIO = 0.90


def one_run(exchanges: list, bodies: str, workdir: Path) -> tuple[float, float]:
    """(rows/s until the last commit, seconds spent in close())."""
    path = workdir / f"bench-{time.monotonic_ns()}.duckdb"
    config = StorageConfig(path=str(path), queue_max=len(exchanges) + 1, bodies=bodies)
    metrics = Metrics()
    recorder = Recorder(config, metrics)
    recorder.start()
    started = time.perf_counter()
    for exchange in exchanges:
        recorder.record(exchange)
    while (metrics.registry.get_sample_value("shadowtap_records_written_total") or 0) < len(
        exchanges
    ):
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    closing = time.perf_counter()
    recorder.close()
    close_s = time.perf_counter() - closing
    con = open_readonly(path)
    rows = sum(
        con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        for table in ("exchanges", "responses", "scores")
    )
    con.close()
    assert rows == len(exchanges) * ROWS_PER_EXCHANGE, rows
    assert not metrics.registry.get_sample_value("shadowtap_records_dropped_total")
    return rows / elapsed, close_s


def load_average() -> str:
    """The 1-minute load average: figures from a busy machine are read against it."""
    return f"{os.getloadavg()[0]:.2f}"


def bench_writer(args: argparse.Namespace) -> None:
    exchanges = [synthetic_exchange(i, stream=i % 2 == 0) for i in range(args.exchanges)]
    rows = args.exchanges * ROWS_PER_EXCHANGE
    print(f"writer: {args.exchanges} exchanges = {rows} rows per run, {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        for bodies in args.bodies:
            results = [one_run(exchanges, bodies, Path(tmp)) for _ in range(args.runs)]
            rates = [rate for rate, _ in results]
            median = statistics.median(rates)
            verdict = "ok" if median >= TARGET_ROWS_PER_S else "BELOW TARGET"
            print(
                f"  bodies={bodies:<8} median {median:>9,.0f} rows/s "
                f"(min {min(rates):,.0f}, max {max(rates):,.0f}; "
                f"close+checkpoint median {statistics.median(c for _, c in results):.2f} s) "
                f"target {TARGET_ROWS_PER_S:,} rows/s: {verdict} (load average {load_average()})"
            )


def bench_proxy(args: argparse.Namespace) -> None:
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            upstream = processes.role("upstream", "0.001")
            candidate = processes.role("upstream", "0.001")
            ports = {}
            for name, storage in (
                ("recording on", {"path": str(Path(workdir) / "bench.duckdb")}),
                ("recording off", {"enabled": False}),
            ):
                config = shadowtap_config(
                    upstream, {"url": candidate}, rate=1.0, max_inflight=1000, storage=storage
                )
                ports[name] = processes.shadowtap(config, Path(workdir))

            async def run() -> tuple[dict[str, list[float]], float, float]:
                urls = {name: f"http://127.0.0.1:{port}{PATH}" for name, (port, _) in ports.items()}
                for url in urls.values():
                    await wait_ready(url)
                for url in urls.values():  # warm-up, not counted: pools, caches, first batch
                    await closed_loop(url, CHAT, args.concurrency, 1.0)
                rps: dict[str, list[float]] = {name: [] for name in urls}
                names = list(urls)
                for round_index in range(args.rounds):
                    # Alternate who goes first so drift in machine speed favours neither.
                    for name in names[round_index % 2 :] + names[: round_index % 2]:
                        rps[name].append(
                            await closed_loop(urls[name], CHAT, args.concurrency, args.duration)
                        )
                admin = ports["recording on"][1]
                written = await metric_total(admin, "shadowtap_records_written_total")
                dropped = await metric_total(admin, "shadowtap_records_dropped_total")
                return rps, written, dropped

            import uvloop

            rps, written, dropped = uvloop.run(run())
    finally:
        processes.stop()
    ratios = [on / off for on, off in zip(rps["recording on"], rps["recording off"], strict=True)]
    median = statistics.median(ratios)
    print(f"proxy: 100% shadowed to one candidate, {args.rounds} rounds of {args.duration:g} s")
    for name, values in rps.items():
        print(f"  {name:<14} median {statistics.median(values):>7,.0f} req/s")
    print(
        f"  on/off: median of per-round ratios {median:.3f}x "
        f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}); "
        f"target >= {TARGET_PROXY_RATIO:.2f}x: {'ok' if median >= TARGET_PROXY_RATIO else 'BELOW'}"
    )
    print(f"  exchanges recorded {written:,.0f}, dropped {dropped:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bodies", nargs="+", default=["redacted", "full", "none"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per proxy run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skip-writer", action="store_true")
    parser.add_argument("--skip-proxy", action="store_true")
    args = parser.parse_args()
    if not args.skip_writer:
        bench_writer(args)
    if not args.skip_proxy:
        bench_proxy(args)


if __name__ == "__main__":
    main()
