"""`shadowtap report` at fleet size: wall time, CPU time and peak RSS over a synthetic Parquet
roll-up.

Writes `--pairs` pairs with bench/fleet_data.py (kept in `--data DIR` between runs when given),
then runs `shadowtap report --parquet DIR --json` as a child process and reads its peak RSS and
CPU-seconds (user + system, all its threads) from the kernel (wait4). On a shared machine the
CPU-seconds say what a change did better than the wall time, which moves with the others' load.
The machine is shared: a report that passes twice the targets (60 s, 2 GB; `--stop-factor`) is
stopped there and reported as such, rather than left to take the machine's memory. `--runs N`
measures N reports and prints each and the medians; `--report FILE` keeps the last run's JSON
report (to compare two versions' output).

    .venv/bin/python bench/report_fleet.py [--pairs 10000000] [--data DIR] [--json FILE]
        [--runs 3] [--stop-factor 2] [--report FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet_data import generate
from bench.harness import memory_kb

TARGET_S = 60.0
TARGET_MB = 2048.0
STOP_FACTOR = 2.0  # stopped past this multiple of either target


def run_report(
    directory: Path, stop_factor: float = STOP_FACTOR, report: Path | None = None
) -> dict[str, Any]:
    shadowtap = str(Path(sys.executable).parent / "shadowtap")
    command = [shadowtap, "report", "--parquet", str(directory), "--json"]
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(report.open("wb")) if report else subprocess.DEVNULL
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.PIPE)
        return _wait(child, started, stop_factor)


def _wait(child: subprocess.Popen[bytes], started: float, stop_factor: float) -> dict[str, Any]:
    stopped = None
    peak_seen = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        elapsed = time.perf_counter() - started
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, KeyError):
            peak_seen = max(peak_seen, memory_kb(child.pid)[1])
        if stopped is None and (
            elapsed > stop_factor * TARGET_S or peak_seen / 1024 > stop_factor * TARGET_MB
        ):
            stopped = f"stopped after {elapsed:.0f} s at {peak_seen / 1024:.0f} MB"
            child.send_signal(signal.SIGKILL)
        time.sleep(0.1)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.stderr is not None
    error = child.stderr.read().decode().strip()
    # ru_maxrss of the waited child, in kB on Linux
    return {
        "seconds": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mb": max(usage.ru_maxrss, peak_seen) / 1024,
        "exit": child.returncode,
        "stopped": stopped,
        "error": error[-500:] if child.returncode not in (0, 1) and not stopped else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--data", type=Path, help="keep the generated Parquet here (reused)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--runs", type=int, default=1, help="reports to measure (medians)")
    parser.add_argument("--stop-factor", type=float, default=STOP_FACTOR)
    parser.add_argument("--report", type=Path, help="keep the last run's JSON report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.data or Path(tmp) / "fleet"
        marker = directory / f".pairs-{args.pairs}"
        if not marker.exists():
            # another size's files, or an interrupted run's: only what generate() writes
            for table in ("exchanges", "responses", "scores"):
                shutil.rmtree(directory / table, ignore_errors=True)
            for stale in directory.glob(".pairs-*"):
                stale.unlink()
            started = time.perf_counter()
            generate(directory, args.pairs)
            marker.touch()
            print(f"generated {args.pairs:,} pairs in {time.perf_counter() - started:.0f} s")
        size = sum(f.stat().st_size for f in directory.rglob("*.parquet")) / 1e6
        runs = []
        for _ in range(args.runs):
            run = run_report(directory, args.stop_factor, args.report)
            run["load_average"] = [round(x, 2) for x in os.getloadavg()]
            runs.append(run)
            _print(run, args.pairs, size)
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    result = {
        **middle,  # its exit, stop and load average, as bench/render.py reads them
        "pairs": args.pairs,
        "parquet_mb": size,
        "runs": runs,
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
    }
    result["met"] = all(r["met"] for r in runs)
    if len(runs) > 1:
        print(
            f"median of {len(runs)}: {result['seconds']:.1f} s, {result['cpu_s']:.1f} CPU-s,"
            f" peak RSS {result['peak_mb']:.0f} MB (spread {_spread(runs, 'seconds', '.1f')} s,"
            f" {_spread(runs, 'cpu_s', '.1f')} CPU-s, {_spread(runs, 'peak_mb', '.0f')} MB)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _spread(runs: list[dict[str, Any]], key: str, spec: str) -> str:
    values = [r[key] for r in runs]
    return f"{min(values):{spec}}-{max(values):{spec}}"


def _print(result: dict[str, Any], pairs: int, size: float) -> None:
    met = (
        not result["stopped"]
        and result["exit"] in (0, 1)
        and result["seconds"] <= TARGET_S
        and result["peak_mb"] <= TARGET_MB
    )
    result["met"] = met
    outcome = result["stopped"] or f"exit {result['exit']}"
    print(
        f"report over {pairs:,} pairs ({size:.0f} MB of Parquet): {result['seconds']:.1f} s"
        f" ({result['cpu_s']:.1f} CPU-s),"
        f" peak RSS {result['peak_mb']:.0f} MB, {outcome}"
        f" (target < {TARGET_S:.0f} s and < {TARGET_MB / 1024:.0f} GB:"
        f" {'ok' if met else 'MISSED'}); load average {result['load_average']}",
        flush=True,
    )
    if result["error"]:
        print(f"report failed: {result['error']}")


if __name__ == "__main__":
    main()
