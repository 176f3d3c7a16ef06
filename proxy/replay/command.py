"""`shadowtap replay`: the command line around `ReplayRunner`.

Exit codes: 0 when everything planned was answered and stored, 3 when the run stopped early
(a budget, a failing candidate, Ctrl-C: the same command resumes it), 2 on bad input.

Examples:

    shadowtap replay --config shadowtap.toml --db shadowtap.duckdb --candidate small --since 7d
    shadowtap replay --config shadowtap.toml --db eval.duckdb --parquet /shared/shadowtap \\
        --candidate small --sample 2000 --seed 1 --rps 5 --max-cost-usd 20
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from shadowtap.replay.progress import ReplaySummary
    from shadowtap.replay.run import ReplayRunner

DEFAULT_DB = "shadowtap.duckdb"
EXIT_STOPPED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="shadowtap.toml naming the candidate")
    parser.add_argument("--candidate", required=True, help="the [candidates.NAME] to replay to")
    parser.add_argument(
        "--db", metavar="PATH", help=f"DuckDB file: source and results (default: {DEFAULT_DB})"
    )
    parser.add_argument(
        "--parquet", metavar="DIR", help="read recorded requests from this Parquet roll-up"
    )
    parser.add_argument("--since", help="recorded since: 24h, 7d, 30m or an ISO date/time")
    parser.add_argument("--until", help="recorded before: 24h, 7d or an ISO date/time")
    parser.add_argument("--route", help="only this route, e.g. /v1/chat/completions")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--sample", type=int, metavar="N", help="a random sample of N requests")
    amount.add_argument("--limit", type=int, metavar="N", help="the oldest N requests")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (0)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    parser.add_argument("--rps", type=float, help="requests per second at most (no limit)")
    parser.add_argument("--max-cost-usd", type=float, help="stop at this spend (needs prices)")
    parser.add_argument("--max-tokens", type=int, help="stop at this many tokens")
    parser.add_argument(
        "--max-consecutive-errors",
        type=int,
        default=20,
        help="stop after this many failed attempts in a row (20)",
    )
    parser.add_argument(
        "--max-retries", type=int, default=3, help="re-sends of a request after 429/503 (3)"
    )
    parser.add_argument(
        "--allow-redacted",
        action="store_true",
        help="also send requests whose stored text was redacted (their answers are marked)",
    )
    parser.add_argument(
        "--retry-interrupted",
        action="store_true",
        help="send again what an earlier run sent but stopped before storing",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from shadowtap.config import load_config
    from shadowtap.log import configure_logging
    from shadowtap.replay.run import ReplayError, ReplayOptions, ReplayRunner
    from shadowtap.replay.source import Selection
    from shadowtap.report.sources import SourceError, parse_since

    console = Console(stderr=True)
    config = load_config(args.config)  # a ConfigError is shadowtap's one message (see cli)
    try:
        configure_logging("warning")
        selection = Selection(
            since=parse_since(args.since) if args.since else None,
            until=parse_since(args.until) if args.until else None,
            route=args.route,
            sample=args.sample,
            limit=args.limit,
            seed=args.seed,
            allow_redacted=args.allow_redacted,
            retry_interrupted=args.retry_interrupted,
        )
        options = ReplayOptions(
            candidate=args.candidate,
            selection=selection,
            concurrency=args.concurrency,
            rps=args.rps,
            max_cost_usd=args.max_cost_usd,
            max_tokens=args.max_tokens,
            max_consecutive_errors=args.max_consecutive_errors,
            max_retries=args.max_retries,
            progress=not args.no_progress,
        )
        if args.parquet and not Path(args.parquet).is_dir():
            raise ReplayError(f"--parquet: {args.parquet} is not a directory")
        runner = ReplayRunner(
            config,
            options,
            db_path=args.db or DEFAULT_DB,
            parquet_dir=args.parquet,
            config_path=args.config,
        )
        summary = _run_with_signals(runner, console)
    except (ReplayError, SourceError, ValueError) as error:
        print(f"shadowtap replay: {error}", file=sys.stderr)
        return 2
    summary.show(Console())
    return 0 if summary.complete else EXIT_STOPPED


def _run_with_signals(runner: ReplayRunner, console: Console) -> ReplaySummary:
    """Run to the end; the first Ctrl-C (or SIGTERM) stops starting requests, the second cuts
    off those in flight."""

    async def main() -> ReplaySummary:
        loop = asyncio.get_running_loop()
        cancelling: list[object] = []

        def interrupt() -> None:
            if runner.stop_reason is None:
                console.print(
                    "stopping: requests in flight finish and are stored "
                    "(Ctrl-C again cuts them off)"
                )
                runner.stop("interrupted (Ctrl-C)")
            elif not cancelling:
                cancelling.append(runner.tasks.spawn(runner.cancel(), name="replay-cancel"))

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, interrupt)
        return await runner.run(console)

    try:
        import uvloop
    except ImportError:  # not built for every platform; asyncio's loop works too
        return asyncio.run(main())
    return uvloop.run(main())
