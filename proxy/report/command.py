"""`shadowtap report`: the command line around `build_report`.

Exit codes (usable as a CI gate): 0 when no candidate fails, 1 when any candidate fails a gate
beyond its confidence interval, 2 on bad input (one line on stderr).

Examples:

    shadowtap report --db shadowtap.duckdb --config shadowtap.toml
    shadowtap report --parquet /shared/shadowtap --since 7d --candidate small --json
    SHADOWTAP_ADMIN_TOKEN=... shadowtap report --url http://127.0.0.1:9464 --html report.html
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shadowtap.config import ReportTables, load_tables

if TYPE_CHECKING:
    from shadowtap.report.sources import Source

DEFAULT_DB = "shadowtap.duckdb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--db", metavar="PATH", help=f"DuckDB file written by serve (default: {DEFAULT_DB})"
    )
    source.add_argument(
        "--parquet", metavar="DIR", help="Parquet roll-up directory (storage.parquet_dir)"
    )
    source.add_argument(
        "--url", metavar="ADMIN_URL", help="admin server of a running proxy (reads /api/pairs)"
    )
    parser.add_argument(
        "--token-env",
        metavar="NAME",
        help="with --url: the environment variable holding the proxy's server.admin_token "
        "(default: SHADOWTAP_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="shadowtap.toml: its [gates] table sets the gates"
    )
    parser.add_argument("--since", help="only pairs since: 24h, 7d, 30m or an ISO date/time")
    parser.add_argument(
        "--candidate",
        action="append",
        metavar="NAME",
        help="report only this candidate (repeatable; default: all)",
    )
    parser.add_argument("--route", help="only pairs of this route, e.g. /v1/chat/completions")
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of tables"
    )
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    parser.add_argument(
        "--examples",
        type=int,
        default=5,
        metavar="N",
        help="most disagreeing pairs shown per candidate (default: 5)",
    )


def load_report_tables(path: str | Path | None) -> ReportTables:
    """The [gates], [scorers] and [report] tables of a config file, read by the config loader
    `serve` uses, with its messages. Only these are substituted and validated: a report often
    runs where the proxy's secrets (`${...}` in other tables) are not set, and it needs none."""
    return ReportTables() if path is None else load_tables(path, ReportTables)


def admin_token(env_name: str | None) -> str | None:
    """The admin token from the environment: `--token-env NAME` must be set, the default
    variable may be absent (a proxy open on loopback needs none). Never from argv, where any
    user of the machine could read it."""
    from shadowtap.report.sources import ADMIN_TOKEN_ENV, SourceError

    token = os.environ.get(env_name or ADMIN_TOKEN_ENV, "").strip()
    if env_name and not token:
        raise SourceError(f"--token-env: environment variable {env_name} is not set")
    return token or None


def open_source(args: argparse.Namespace) -> Source:
    from shadowtap.report.sources import open_db, open_parquet, open_url, parse_since

    if args.url:
        since = parse_since(args.since) if args.since else None
        return open_url(args.url, since, admin_token(args.token_env))
    if args.parquet:
        return open_parquet(args.parquet)
    return open_db(args.db or DEFAULT_DB)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from shadowtap.report.build import build_report
    from shadowtap.report.html import write_html
    from shadowtap.report.model import report_json
    from shadowtap.report.sources import SourceError, parse_since
    from shadowtap.report.text import print_report

    tables = load_report_tables(args.config)  # a ConfigError is shadowtap's one message
    try:
        if args.examples < 0:
            raise SourceError(f"--examples must be 0 or more (got {args.examples})")
        since = parse_since(args.since) if args.since else None
        report = build_report(
            open_source(args),
            tables.gates,
            since=since,
            candidates=args.candidate,
            route=args.route,
            examples=args.examples,
            scorers=tables.scorers,
            slice_by=tables.report.slice_by,
        )
        if args.html:
            write_html(report, args.html)
    except SourceError as error:
        print(f"shadowtap report: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"shadowtap report: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        console = Console()
        print_report(report, console)
        if args.html:
            # soft_wrap: a path must stay on one line to be copied (or matched) whole
            console.print(f"HTML report: {args.html}", highlight=False, soft_wrap=True)
    return 1 if report.any_failed else 0
