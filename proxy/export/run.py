"""`export`: the selected rows through one format into files, with what was left out and why.

Example:

    left_out = Counter()
    result = export(Path("shadowtap.duckdb"), Path("out.jsonl"), "jsonl", ExportQuery(),
                    "redacted", left_out)
    print(result.statement())   # "exported 120 rows to out.jsonl; left out 3: ..."
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from shadowtap.export.formats import batch_line, chat_line, write_lines, write_parquet
from shadowtap.export.rows import REASONS, ExportQuery, read_rows
from shadowtap.recorder import SchemaError, open_readonly
from shadowtap.recorder.privacy import Bodies, Privacy


class ExportError(Exception):
    """The export cannot run; the message is one line for the user."""


@dataclass(slots=True)
class ExportResult:
    files: list[Path]
    written: int
    format: str
    left_out: Counter[str] = field(default_factory=Counter)

    def statement(self) -> str:
        where = ", ".join(str(f) for f in self.files)
        text = f"exported {self.written:,} rows ({self.format}) to {where}"
        total = sum(self.left_out.values())
        if not total:
            return text + "; nothing left out"
        reasons = "; ".join(
            f"{count:,} {REASONS.get(reason, reason)}"
            for reason, count in sorted(self.left_out.items(), key=lambda kv: -kv[1])
        )
        return f"{text}; left out {total:,}: {reasons}"


def _bodies(config_path: str | None) -> Bodies:
    """storage.bodies of the config, read by the loader `serve` uses (only [storage] is
    substituted: an export needs none of the proxy's secrets)."""
    if config_path is None:
        return "redacted"
    from shadowtap.config import ExportTables, load_tables

    return load_tables(config_path, ExportTables).storage.bodies


def query_from_args(args: argparse.Namespace) -> tuple[ExportQuery, Bodies]:
    from shadowtap.report.sources import SourceError, parse_since

    if args.only == "disagreements":
        if not args.candidate or not args.scorer:
            raise ExportError("--only disagreements needs --candidate NAME and --scorer S")
        if args.below is not None and not math.isfinite(args.below):
            raise ExportError(f"--below must be a number (got {args.below})")
    elif args.scorer or args.below is not None:
        raise ExportError("--scorer and --below go with --only disagreements")
    if args.model is not None and args.format != "openai-batch":
        raise ExportError("--model goes with --format openai-batch")
    try:
        since = parse_since(args.since) if args.since else None
        until = parse_since(args.until) if args.until else None
    except SourceError as error:
        raise ExportError(str(error)) from None
    query = ExportQuery(
        since=since,
        until=until,
        route=args.route,
        candidate=args.candidate,
        scorer=args.scorer,
        below=args.below,
        allow_redacted=args.allow_redacted,
    )
    return query, _bodies(args.config)


def _threshold(con: duckdb.DuckDBPyConnection, query: ExportQuery) -> float:
    row = con.execute(
        "SELECT arg_max(threshold, request_id) FROM scores WHERE scorer = ? AND target = ?",
        [query.scorer, query.candidate],
    ).fetchone()
    if not row or row[0] is None:
        raise ExportError(
            f"no threshold stored for scorer {query.scorer!r} on {query.candidate!r}: give --below"
        )
    return float(row[0])


def export(
    db: Path,
    out: Path,
    format: str,
    query: ExportQuery,
    bodies: Bodies,
    left_out: Counter[str],
    *,
    model: str | None = None,
) -> ExportResult:
    try:
        con = open_readonly(db)
    except SchemaError as error:
        raise ExportError(str(error)) from None
    except duckdb.Error as error:
        raise ExportError(f"cannot open {db}: {error}") from None
    try:
        if query.candidate is not None:
            row = con.execute(
                "SELECT count(*) FROM responses WHERE target = ? AND role <> 'primary'",
                [query.candidate],
            ).fetchone()
            if not row or not row[0]:
                raise ExportError(f"no answers from candidate {query.candidate!r} in {db}")
        if query.scorer is not None and query.below is None:
            query = dataclasses.replace(query, below=_threshold(con, query))
        rows = read_rows(con, query, Privacy(bodies), left_out)
        try:
            if format == "parquet":
                written = write_parquet(out, rows)
                return ExportResult([out], written, format, left_out)
            if format == "jsonl":
                lines = (line for r in rows if (line := chat_line(r, left_out)) is not None)
            else:
                lines = (line for r in rows if (line := batch_line(r, model, left_out)) is not None)
            counted = _Counted(lines)
            files = write_lines(out, counted, split=format == "openai-batch")
        except OSError as error:
            raise ExportError(f"cannot write {error.filename or out}: {error.strerror}") from None
        return ExportResult(files, counted.count, format, left_out)
    finally:
        con.close()


class _Counted:
    """The lines passing through, counted."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = lines
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._lines:
            self.count += 1
            yield line
