"""Recorder write throughput: rows per second sustained into a DuckDB file.

    .venv/bin/python bench/recorder.py [--exchanges 10000] [--runs 5] [--bodies redacted]

One exchange = 1 exchanges row + 3 responses + 4 scores = 8 rows (`proxy.recorder.synthetic`).
A run records every exchange as fast as `record()` accepts them (the queue holds them all, so
nothing is dropped) and stops the clock when the writer has committed the last one; the
closing checkpoint is timed separately. The median of the runs is printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from proxy.config import StorageConfig
from proxy.metrics import Metrics
from proxy.recorder import Recorder, open_readonly
from proxy.recorder.synthetic import synthetic_exchange

ROWS_PER_EXCHANGE = 8
TARGET_ROWS_PER_S = 50_000


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bodies", nargs="+", default=["redacted", "full", "none"])
    args = parser.parse_args()
    exchanges = [synthetic_exchange(i, stream=i % 2 == 0) for i in range(args.exchanges)]
    rows = args.exchanges * ROWS_PER_EXCHANGE
    print(f"recorder: {args.exchanges} exchanges = {rows} rows per run, {args.runs} runs")
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
                f"target {TARGET_ROWS_PER_S:,} rows/s: {verdict}"
            )


if __name__ == "__main__":
    main()
