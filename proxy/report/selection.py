"""The report's working table: the selected pairs, once, as compact columns (`report_pairs`).

Every measure of the report reads this table, never Python rows: DuckDB aggregates it (counts,
rates, per-slice groups) and hands over single columns as numpy arrays where per-pair values
are needed (bootstraps, percentiles). It holds no text: what the report needs of the request
body (its slice values) and of each answer (its reliability checks) is computed in the one
pass that builds it, and the few example pairs' texts are read back from `pairs` at the end.

Memory is bounded by design (`shadowtap.report.workspace`): DuckDB gets a memory limit and a
private spill directory, the table is kept compressed in a work database there, and at fleet
size it is built in slices of request ids, each small enough for its joins to stay in memory.

Columns besides the `pairs` view's numeric ones:

- `sent`: the shadow was sent (a `not sent: ...` shadow is no pair; `report.measures`);
- `primary_ok`, `candidate_ok`: a 2xx answer without error;
- `primary_checks`, `candidate_checks`: each answer's reliability checks
  (`shadowtap.report.reliability.CHECKS`), packed two bits per check (`answer_checks`);
- `d_route`, `d_model`, ... `d_custom0` ...: the request's display value on each slice
  dimension (`shadowtap.report.slices`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import duckdb
from shadowtap.completion import NOT_SENT
from shadowtap.recorder import create_pairs_view
from shadowtap.report.answer_checks import checks_sql, ok_sql, packed_check
from shadowtap.report.slices import (
    BUILT_IN,
    PROMPT_BUCKETS,
    TURN_BUCKETS,
    VALUE_CHARS,
    json_path,
)
from shadowtap.report.sources import Source
from shadowtap.report.workspace import WORK, prepare, ranges

# Every character Python's str.split() splits on, so that slice values are normalised in SQL
# exactly as `" ".join(value.split())` does.
_SPACE = "".join(
    f"\\x{{{c:x}}}" for c in range(0x110000) if chr(c).isspace() and not 0xD800 <= c < 0xE000
)
SPACES = f"[{_SPACE}]+"


def _text(expression: str) -> str:
    """`slices._text` in SQL: whitespace collapsed, at most VALUE_CHARS characters. A short
    ASCII value without whitespace (a route, a model: nearly all) is kept as it is without
    running the regular expression."""
    squeezed = f"trim(regexp_replace({expression}, '{SPACES}', ' ', 'g'))"
    return (
        f"(CASE WHEN {expression} IS NULL THEN '(none)'"
        f" WHEN strlen({expression}) <= {VALUE_CHARS}"
        f" AND NOT regexp_matches({expression}, '[\\x00-\\x20\\x7f-\\x{{10ffff}}]')"
        f" THEN {expression}"
        f" WHEN length({squeezed}) <= {VALUE_CHARS} THEN {squeezed}"
        f" ELSE left({squeezed}, {VALUE_CHARS - 1}) || '…' END)"
    )


def _bucket(expression: str, buckets: tuple[tuple[int | None, str], ...]) -> str:
    arms = " ".join(
        f"WHEN {expression} < {upper} THEN '{label}'" for upper, label in buckets if upper
    )
    return f"(CASE WHEN {expression} IS NULL THEN 'unknown' {arms} ELSE '{buckets[-1][1]}' END)"


def _yes_no(expression: str) -> str:
    return (
        f"(CASE WHEN {expression} IS NULL THEN 'unknown'"
        f" WHEN {expression} THEN 'yes' ELSE 'no' END)"
    )


# The request's slice inputs (as `slices` defines them), from its stored body, parsed once:
# `parts` holds the body's values at these paths.
PARTS = (
    "$.tools",
    "$.response_format.type",
    "$.text.format.type",
    "$.messages",
    "$.input",
    "$.response_format.json_schema.schema",
    "$.text.format.schema",
)
REQUEST_SQL = """
    coalesce(json_array_length(parts[1]), 0) > 0 AS tools,
    CASE WHEN coalesce(parts[2]->>'$', parts[3]->>'$') IN ('json_object', 'json_schema')
         THEN coalesce(parts[2]->>'$', parts[3]->>'$') END AS json_mode,
    coalesce(primary_prompt_tokens, length(CAST(request_body AS VARCHAR)) // 4) AS prompt_size,
    coalesce(json_array_length(parts[4]), json_array_length(parts[5]),
             CASE WHEN json_type(parts[5]) = 'VARCHAR' THEN 1 END) AS turns,
    CASE WHEN json_array_length(parts[1]) > 0 THEN CAST(parts[1] AS VARCHAR) END AS tools_json,
    CAST(coalesce(parts[6], parts[7]) AS VARCHAR) AS schema_json
"""

KEPT = (
    "request_id, target, role, primary_latency_ms, candidate_latency_ms, primary_ttft_ms,"
    " candidate_ttft_ms, primary_prompt_tokens, candidate_prompt_tokens,"
    " primary_completion_tokens, candidate_completion_tokens, primary_cost_usd,"
    " candidate_cost_usd, candidate_source"
)


# What the report reads of `pairs` (or `unscored_pairs`), named.
PAIR_COLUMNS = ", ".join(
    [
        "request_id",
        "target",
        "role",
        "route",
        "model",
        "stream",
        "request_body",
        "slice_headers",
        *(
            f"{side}_{column}"
            for side in ("primary", "candidate")
            for column in (
                "status",
                "error",
                "latency_ms",
                "ttft_ms",
                "text",
                "tool_calls",
                "finish_reason",
                "prompt_tokens",
                "completion_tokens",
                "cost_usd",
            )
        ),
        "candidate_source",
    ]
)


@dataclass(frozen=True, slots=True)
class Selection:
    """Where each scorer's scores are in `report_pairs`: `score<i>` (NULL when the pair has
    no number from it) and `scored<i>` (the pair has a row of it at all, a number or not:
    the `pairs` view's `scores` map has the key)."""

    columns: dict[str, int]  # scorer -> i

    def score(self, scorer: str) -> str:
        i = self.columns.get(scorer)
        return "CAST(NULL AS DOUBLE)" if i is None else f"score{i}"

    def scored(self, scorer: str) -> str:
        i = self.columns.get(scorer)
        return "false" if i is None else f"scored{i}"


def _score_columns(source: Source) -> tuple[Selection, str, str]:
    """The scorers' columns, and the SQL that gives them: a pivot of the score rows (of the
    relation `{scores}` stands for) joined on the pair when the source has them (cheaper than
    the view's MAP at fleet size), else read from the `scores` MAP of `pairs` (the live API's
    pairs)."""
    con = source.con
    if source.has_score_rows:
        found = con.execute("SELECT DISTINCT scorer FROM score_rows WHERE scorer IS NOT NULL")
    else:
        found = con.execute("SELECT DISTINCT unnest(map_keys(scores)) FROM pairs")
    names = sorted(name for (name,) in found.fetchall() if name is not None)
    selection = Selection({name: i for i, name in enumerate(names)})
    quoted = {name: "'" + name.replace("'", "''") + "'" for name in names}
    if not source.has_score_rows:
        columns = "".join(
            f", scores[{quoted[n]}] AS score{i}, map_contains(scores, {quoted[n]}) AS scored{i}"
            for n, i in selection.columns.items()
        )
        return selection, columns, ""
    pivot = ", ".join(
        f"avg(score) FILTER (WHERE scorer = {quoted[n]}) AS score{i},"
        f" count(*) FILTER (WHERE scorer = {quoted[n]}) > 0 AS scored{i}"
        for n, i in selection.columns.items()
    )
    columns = ""  # the pivot's own columns (scored<i> NULL, not false, on a pair without rows)
    join = (
        f" LEFT JOIN (SELECT request_id, target, {pivot} FROM {{scores}}"
        " GROUP BY request_id, target) USING (request_id, target)"
        if names
        else ""
    )
    return selection, columns, join


def dimension_columns(slice_by: Sequence[str]) -> list[str]:
    """The `report_pairs` column of each slice dimension, in `slices.dimensions` order."""
    return [f"d_{name}" for name in BUILT_IN] + [f"d_custom{i}" for i in range(len(slice_by))]


SLICE_PAIRS = "report_slice_pairs"  # the pairs view over one slice's rows
BUILD_SIDES = "build_side_probe_side"  # the optimizer that picks a hash join's build side


def select_pairs(
    source: Source, since: datetime | None, route: str | None, slice_by: Sequence[str]
) -> Selection:
    """Create `report_pairs` from the pairs of the selection, each target's rows in request
    order (the order every per-pair column is read in, `WHERE target = ...`, so bootstraps
    draw the same pairs on every run and source)."""
    con = source.con
    prepare(con)
    with contextlib.suppress(duckdb.CatalogException):  # a second report on this source
        con.create_function(
            "shadowtap_check",
            packed_check,
            ["VARCHAR", "BOOLEAN", *["VARCHAR"] * 6],
            "INTEGER",
            null_handling=cast(Any, "special"),  # NULLs reach it (as the SQL does)
        )
    clauses: list[str] = []
    params: dict[str, object] = {}
    if since is not None:
        clauses.append("started_at >= $since")
        params["since"] = since
    if route is not None:
        clauses.append("route = $route")
        params["route"] = route
    custom = []
    for i, spec in enumerate(slice_by):
        kind, _, name = spec.partition(":")
        column = "request_body" if kind == "body" else "slice_headers"
        params[f"path{i}"] = json_path(name) if kind == "body" else f'$."{name.lower()}"'
        custom.append(f", {_text(f'json_extract_string({column}, $path{i})')} AS d_custom{i}")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    selection, score_columns, score_join = _score_columns(source)
    columns = PAIR_COLUMNS if source.has_score_rows else f"{PAIR_COLUMNS}, scores"
    params["parts"] = list(PARTS)
    params["not_sent"] = NOT_SENT
    sent = (
        "(candidate_status IS NOT NULL OR candidate_error IS NULL"
        " OR NOT starts_with(candidate_error, $not_sent))"
    )
    query = f"""
        SELECT * {score_columns}
        FROM (
            SELECT {KEPT}, {sent} AS sent,
                {ok_sql("primary")} AS primary_ok, {ok_sql("candidate")} AS candidate_ok,
                {checks_sql("primary")} AS primary_checks,
                {checks_sql("candidate")} AS candidate_checks,
                {_text("route")} AS d_route,
                {_text("model")} AS d_model,
                {_yes_no("stream")} AS d_stream,
                {_yes_no("tools")} AS d_tools,
                coalesce(json_mode, 'none') AS d_structured,
                {_bucket("prompt_size", PROMPT_BUCKETS)} AS d_prompt_tokens,
                {_bucket("turns", TURN_BUCKETS)} AS d_turns
                {"".join(custom)}
                {", scores" if not source.has_score_rows else ""}
            FROM (
                SELECT *, {REQUEST_SQL}
                FROM (
                    SELECT {columns}, json_extract(request_body, $parts) AS parts
                    FROM {SLICE_PAIRS if source.has_score_rows else "pairs"} {where}
                )
            )
        ){score_join}
        ORDER BY target, request_id
    """
    tables = source.tables
    conditions = ranges(con, tables.exchanges) if tables is not None else ["true"]
    # Each hash join built on its right side as written (a slice's responses, the score
    # pivot), not on the side DuckDB's estimates pick: those are of whole files, so it built
    # on the wide joined rows (texts, bodies) and probed with the narrow ones. The same joins,
    # ~10% less work per slice at fleet size.
    con.execute(f"SET disabled_optimizers = '{BUILD_SIDES}'")
    try:
        _insert_slices(con, source, query, params, conditions)
    finally:
        con.execute("RESET disabled_optimizers")
    con.execute(f"CREATE OR REPLACE TEMPORARY VIEW report_pairs AS FROM {WORK}.report_pairs")
    return selection


def _insert_slices(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    query: str,
    params: dict[str, object],
    conditions: list[str],
) -> None:
    tables = source.tables
    for i, condition in enumerate(conditions):
        scores = "score_rows"
        if tables is not None:
            scores = f"(SELECT * FROM {tables.scores} WHERE {condition})"
            create_pairs_view(
                con,
                f"(SELECT * FROM {tables.exchanges} WHERE {condition})",
                f"(SELECT * FROM {tables.responses} WHERE {condition})",
                f"(SELECT * FROM {tables.scores} WHERE false)",
                name=SLICE_PAIRS,
                temporary=True,
            )
        # Each slice appended in its own (target, request) order: the slices are ranges of
        # request ids in order, so each target's rows come out in request order.
        into = f"INSERT INTO {WORK}.report_pairs" if i else f"CREATE TABLE {WORK}.report_pairs AS"
        con.execute(f"{into} {query.replace('{scores}', scores)}", params)
