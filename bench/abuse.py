"""Fault-and-abuse suite: what hostile candidates and clients do to the primary path.

Every case gets its own `shadowtap serve` process (so its RSS is its own, from /proc) in front of
the fake primary of `bench/abuse_fakes.py`, mirroring to a fake candidate; a control proxy with
a healthy candidate runs beside them for the whole run. Per case, in interleaved windows, the
same open-loop probe (`--probe-rps`, JSON and SSE) goes to the control and to the case proxy
while the case's abuse runs. Cases:

  candidate faults  hang, error500, reset (mid-answer), garbage, endless (SSE at full speed),
                    unresolvable (a host name that cannot be resolved), closed (a closed port)
  connections       slowloris (headers one byte at a time) and idle connections to both
                    listeners, the proxy started with a 1,024-file soft limit
  bad input         the corpus (empty body, invalid / non-object JSON, non-string model,
                    stream "false", huge headers, absolute-form target, query-string
                    credentials), 70 bodies nested 1000 deep, a catastrophic schema regex
  large prompts     1 MB and 2 MB bodies from 8 clients at 20% and 100% sampling

Per case it prints: primary answers identical to what the fake primary sent (count), the
probe's p50/p99 against the control's in the same rounds (median of per-round ratios),
records lost (sampled - rows in DuckDB - counted drops), and the proxy's peak RSS.
It is a measuring tool: it exits non-zero only when the harness itself breaks.

    .venv/bin/python bench/abuse.py [--quick] [--rounds 3] [--window 8] [--only CASE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.abuse_attacks import CASES
from bench.abuse_cases import Case, CaseRun, Probe, settle
from bench.harness import ROOT, Processes, free_port, percentile

FAKES = str(ROOT / "bench" / "abuse_fakes.py")


def ratio(case: list[float], control: list[float], q: float) -> float:
    per_round = [
        percentile(c, q) / percentile(k, q) for c, k in zip(case, control, strict=True) if c and k
    ]
    return statistics.median(per_round) if per_round else float("nan")


async def run_case(case: Case, run: CaseRun, control: CaseRun, args: argparse.Namespace) -> None:
    """Interleaved windows: control probe, then case probe with the abuse running."""
    await run.ready()
    await case.abuse.start(run, args)
    for round_index in range(args.rounds):
        order = (control, run) if round_index % 2 == 0 else (run, control)
        for target in order:
            probe = Probe(target, f"{case.name}-{round_index}-{target.label}", args)
            if target is run:
                await asyncio.gather(
                    probe.run(args.window), case.abuse.window(run, args, round_index)
                )
                run.windows.append(probe.latencies)
            else:
                await probe.run(args.window)
                run.control_windows.append(probe.latencies)
                control.windows.append(probe.latencies)
    await case.abuse.finish(run, args)
    await run.stop()  # it drains in the background while the next case runs


def print_table(runs: list[CaseRun], control: CaseRun) -> None:
    print()
    print(
        f"{'case':<16}{'identical':>15}{'p50 x':>8}{'p99 x':>8}{'p99 ms':>9}{'lost':>7}"
        f"{'RSS peak MB':>13}  notes"
    )
    for run in [control, *runs]:
        p50 = ratio(run.windows, run.control_windows, 50) if run is not control else 1.0
        p99 = ratio(run.windows, run.control_windows, 99) if run is not control else 1.0
        every = [x for window in run.windows for x in window]
        lost = "n/a" if run.lost is None else f"{run.lost:.0f}"
        print(
            f"{run.label:<16}{f'{run.identical}/{run.requests}':>15}{p50:>8.2f}{p99:>8.2f}"
            f"{percentile(every, 99) * 1000:>9.1f}{lost:>7}{run.rss_peak_kb / 1024:>13.0f}"
            f"  {'; '.join(run.notes)}"
        )


async def main_async(args: argparse.Namespace, workdir: Path, processes: Processes) -> int:
    port = free_port()
    processes.spawn([sys.executable, FAKES, "primary", str(port)])
    primary = f"http://127.0.0.1:{port}"
    port = free_port()
    processes.spawn([sys.executable, FAKES, "candidate", str(port)])
    candidate = f"http://127.0.0.1:{port}"

    cases = [
        c for c in CASES if (not args.only or c.name in args.only) and (c.quick or not args.quick)
    ]
    control = CaseRun("control", primary, candidate, "ok", workdir, processes, args)
    runs: list[CaseRun] = []

    def boot(index: int) -> None:  # one case ahead: it starts while the previous case runs
        if index < len(cases):
            runs.append(
                CaseRun.for_case(cases[index], primary, candidate, workdir, processes, args)
            )

    started = time.monotonic()
    boot(0)
    await control.ready()
    print(f"control ready at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    for index, case in enumerate(cases):
        boot(index + 1)
        await run_case(case, runs[index], control, args)
        print(
            f"{case.name}: done at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True
        )
    await control.stop()
    for run in [control, *runs]:
        await settle(run)
    print(f"all stopped at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print_table(runs, control)
    for run in runs:
        for item, outcome in run.corpus:
            print(f"  {run.label}: {item}: {outcome}")
    print(
        f"\n{args.rounds} round(s) of {args.window:g} s windows per case at {args.probe_rps:g} "
        "req/s (one in three streamed); ratios are medians of per-round case/control ratios, "
        "measured on a 2-core machine shared with other work: expect ±20% noise on p50 and "
        "more on p99 with few requests per window."
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset in short windows (< 2 min)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=8.0, help="seconds per probe window")
    parser.add_argument("--probe-rps", type=float, default=40.0)
    parser.add_argument("--hold", type=float, default=75.0, help="slowloris/idle hold, s")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="client side, s")
    parser.add_argument("--rss-cap-mb", type=float, default=4096.0, help="stop big prompts here")
    parser.add_argument("--only", nargs="+", metavar="CASE")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.window, args.hold, args.request_timeout = 1, 2.5, 12.0, 10.0
    known = {c.name for c in CASES}
    if args.only and not set(args.only) <= known:
        parser.error(f"--only takes cases from: {' '.join(sorted(known))}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            import uvloop

            code = uvloop.run(main_async(args, Path(tmp), processes))
    finally:
        processes.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
