"""A synthetic Parquet roll-up at fleet size, written by DuckDB from `range()` (no Python rows).

The layout is the recorder's (`<dir>/<table>/date=YYYY-MM-DD/*.parquet`, see
`shadowtap.recorder.parquet`) and every column has the recorder's own type: the SELECTs are
cast to the columns of a freshly migrated schema, so a migration that adds a column shows up
here as a NULL of the right type rather than a silently different layout.

Each request has a primary answer and one candidate's (`small`); every tenth request also has
a secondary (the noise floor). Non-primary answers carry two scores (`similarity`, `exact`)
with a threshold, like `shadowtap.recorder.synthetic`. So `pairs` = requests x 1.1.

    .venv/bin/python bench/fleet_data.py DIR [--pairs 10000000] [--days 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadowtap.recorder import migrate
from shadowtap.recorder.schema import COLUMNS

SECONDARY_EVERY = 10  # one request in ten also goes to the secondary
CANDIDATE_FAILS_EVERY = 50  # one candidate answer in fifty is an upstream 500
START = "2026-01-05 00:00:00+00"

# Per table: column -> SQL expression over `i` (the request's number), `t` (its target's
# number: 0 primary, 1 candidate, 2 secondary) and `d` (its day). Columns not named are NULL.
EXCHANGES = {
    # time-ordered like a UUIDv7: the hex of i first
    "request_id": "printf('%016x-7000-8000-000000000000', i)",
    "started_at": f"TIMESTAMPTZ '{START}' + to_microseconds(i::BIGINT * {{step_us}})",
    "method": "'POST'",
    "path": "'/v1/chat/completions'",
    "route": "'/v1/chat/completions'",
    "model": "CASE WHEN i % 3 = 0 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END",
    "stream": "i % 2 = 0",
    "request_body": (
        'printf(\'{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":'
        '"You are a concise assistant."}},{{"role":"user","content":"Question %d: what is the '
        'capital of France, and why has it been the political centre for so long?"}}],'
        '"temperature":0.2}}\', i)'
    ),
    "header_names": "['content-type', 'authorization']",
    "slice_headers": 'CASE WHEN i % 4 = 0 THEN \'{{"x-tenant":"acme"}}\' ELSE NULL END',
}
RESPONSES = {
    "request_id": "printf('%016x-7000-8000-000000000000', i)",
    "target": "CASE t WHEN 0 THEN 'primary' WHEN 1 THEN 'small' ELSE 'secondary' END",
    "role": "CASE t WHEN 0 THEN 'primary' WHEN 1 THEN 'candidate' ELSE 'secondary' END",
    "status": f"CASE WHEN t = 1 AND i % {CANDIDATE_FAILS_EVERY} = 7 THEN 500 ELSE 200 END",
    "error": f"CASE WHEN t = 1 AND i % {CANDIDATE_FAILS_EVERY} = 7 THEN 'upstream said: busy' END",
    "latency_ms": "400 + (hash(i, t) % 900) + t * 30",
    "ttft_ms": "CASE WHEN i % 2 = 0 THEN 80 + (hash(i, t, 1) % 200) END",
    "text": (
        "CASE WHEN NOT (t = 1 AND i % 50 = 7) THEN printf('The capital of France is Paris. "
        "It has been the political and cultural centre since the Middle Ages; today about two "
        "million people live in the city proper (answer %d of %d).', i, t) END"
    ),
    "finish_reason": "CASE WHEN NOT (t = 1 AND i % 50 = 7) THEN 'stop' END",
    "prompt_tokens": "31 + i % 7",
    "completion_tokens": "48 + (i + t) % 11",
    "response_model": "'gpt-4o-mini-2024-07-18'",
    "cost_usd": "CASE t WHEN 0 THEN 0.0004 ELSE 0.00012 END",
    "source": "'live'",
}
SCORES = {
    "request_id": "printf('%016x-7000-8000-000000000000', i)",
    "target": "CASE t WHEN 1 THEN 'small' ELSE 'secondary' END",
    "scorer": "CASE s WHEN 0 THEN 'similarity' ELSE 'exact' END",
    "score": (
        "CASE WHEN t = 1 AND i % 50 = 7 THEN NULL WHEN s = 0 "
        "THEN 0.95 - (hash(i, t, s) % 30) / 100 - (t = 1)::INT * 0.02 "
        "ELSE ((hash(i, t, s) % 10) < 8)::INT END"
    ),
    "threshold": "0.8",
}


def _select(table: str, expressions: dict[str, str], types: dict[str, str]) -> str:
    unknown = set(expressions) - set(COLUMNS[table])
    if unknown:
        raise SystemExit(f"{table}: no such column {sorted(unknown)} in the recorder's schema")
    columns = [
        f"CAST({expressions.get(name, 'NULL')} AS {types[name]}) AS {name}"
        for name in COLUMNS[table]
    ]
    return ",\n       ".join(columns)


def generate(directory: Path, pairs: int, days: int = 7) -> int:
    """Write about `pairs` pairs under `directory`, one file per table and day (so memory stays
    that of one day's rows); returns how many requests were written."""
    requests = max(1, round(pairs / (1 + 1 / SECONDARY_EVERY)))
    step_us = days * 86_400_000_000 // requests
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET memory_limit = '1GB'")
    con.execute("SET enable_progress_bar = false")
    migrate(con)  # only to read the recorder's column types
    types = {
        table: {n: k for n, k, *_ in con.execute(f"DESCRIBE {table}").fetchall()}
        for table in ("exchanges", "responses", "scores")
    }
    has_secondary = f"i % {SECONDARY_EVERY} = 0"
    per_day = -(-requests // days)
    for index in range(days):
        first, last = index * per_day, min(requests, (index + 1) * per_day)
        if first >= last:
            break
        ids = f"(SELECT range AS i FROM range({first}, {last}))"
        sources = {
            "exchanges": (EXCHANGES, ids),
            "responses": (
                RESPONSES,
                f"(SELECT i, t FROM {ids}, range(3) AS r(t) WHERE t < 2 OR {has_secondary})",
            ),
            "scores": (
                SCORES,
                f"(SELECT i, t, s FROM {ids}, range(1, 3) AS r(t), range(2) AS q(s)"
                f" WHERE t = 1 OR {has_secondary})",
            ),
        }
        day = con.execute(
            f"SELECT CAST(TIMESTAMPTZ '{START}'"
            f" + to_microseconds({first}::BIGINT * {step_us}) AS DATE)"
        ).fetchall()[0][0]
        for table, (expressions, rows) in sources.items():
            select = _select(table, expressions, types[table]).replace("{step_us}", str(step_us))
            select = select.replace("{{", "{").replace("}}", "}")
            folder = directory / table / f"date={day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            target = str(folder / f"synthetic-{first}.parquet").replace("'", "''")
            con.execute(
                f"COPY (SELECT {select} FROM {rows}) TO '{target}'"
                " (FORMAT parquet, COMPRESSION zstd)"
            )
    con.close()
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    requests = generate(args.directory, args.pairs, args.days)
    print(
        f"{requests:,} requests ({args.pairs:,} pairs) written under {args.directory} "
        f"in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
