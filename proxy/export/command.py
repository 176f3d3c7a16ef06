"""`shadowtap export`: recorded data out, for the tools people already use.

Examples:

    shadowtap export --db shadowtap.duckdb --since 7d --format jsonl --out traffic.jsonl
    shadowtap export --db shadowtap.duckdb --format openai-batch --model gpt-4o-mini \\
        --out batch.jsonl
    shadowtap export --db shadowtap.duckdb --candidate small --only disagreements \\
        --scorer similarity --below 0.6 --format jsonl --out hard-cases.jsonl

Always says how many rows it wrote and how many it left out, and why (on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

DEFAULT_DB = "shadowtap.duckdb"
FORMATS = ("jsonl", "openai-batch", "parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", help=f"DuckDB file (default: {DEFAULT_DB})")
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    parser.add_argument("--format", choices=FORMATS, default="jsonl", help="(jsonl)")
    parser.add_argument("--since", help="recorded since: 24h, 7d, 30m or an ISO date/time")
    parser.add_argument("--until", help="recorded before: 24h, 7d or an ISO date/time")
    parser.add_argument("--route", help="only this route, e.g. /v1/chat/completions")
    parser.add_argument("--candidate", metavar="NAME", help="include this candidate's answers")
    parser.add_argument(
        "--only", choices=("disagreements",), help="only pairs scoring under --below on --scorer"
    )
    parser.add_argument("--scorer", help="with --only disagreements: the scorer to read")
    parser.add_argument(
        "--below",
        type=float,
        help="with --only disagreements: the score under which a pair disagrees "
        "(default: the scorer's stored threshold)",
    )
    parser.add_argument(
        "--model", help="openai-batch: the model the batch runs (default: as recorded)"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="shadowtap.toml: its storage.bodies sets the redaction"
    )
    parser.add_argument(
        "--allow-redacted", action="store_true", help="also export rows with redacted text"
    )


def run(args: argparse.Namespace) -> int:
    from shadowtap.export.run import ExportError, export, query_from_args

    try:
        query, bodies = query_from_args(args)
        left_out: Counter[str] = Counter()
        result = export(
            Path(args.db or DEFAULT_DB),
            Path(args.out),
            args.format,
            query,
            bodies,
            left_out,
            model=args.model,
        )
    except ExportError as error:  # a ConfigError is shadowtap's one message (see cli)
        print(f"shadowtap export: {error}", file=sys.stderr)
        return 2
    print(result.statement(), file=sys.stderr)
    return 0
