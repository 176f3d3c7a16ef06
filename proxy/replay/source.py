"""Which recorded requests a replay sends, and each one as it was recorded.

The plan is made once, in SQL, over the recorded exchanges in the window: each exchange is
either replayable or skipped for a reason the summary counts. A replay sends only what it can
send faithfully: a request body stored as the client sent it (a JSON object), with a primary
answer to compare against. Anything storage changed (a `[REDACTED:...]` marker in the request
or the primary's answer) would be another question or another reference, so it is skipped
unless `allow_redacted` (and its answers are then marked `replay-redacted`).

Idempotence is keyed by (request, candidate): a request the candidate already answered (live
or in an earlier replay) is never sent again, and one claimed by an earlier replay that died
before its answer was stored is not either, unless `retry_interrupted` (it may have been
sent: at most once is the promise).

Example:

    plan = make_plan(con, Relations.local(), "small", Selection(since=..., sample=500))
    for start, stop in plan.bounds: load_page(con, relations, start, stop)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import orjson
from shadowtap.completion import Completion
from shadowtap.recorder.schema import COLUMNS, parquet_relations
from shadowtap.replay.stored import recorded_completion

REDACTION_MARK = "[REDACTED:"
PLAN_TABLE = "replay_plan"
PAGE_ROWS = 200  # recorded requests loaded at a time ...
PAGE_CHARS = 64 * 1024 * 1024  # ... and at most this much of their bodies

# Why a recorded exchange in the window is not sent; the summary explains each.
REASONS = {
    "no_body": "request body not stored (storage.bodies = none)",
    "not_json": "request body is not a JSON object",
    "truncated": "request or primary answer cut at storage.max_text_bytes",
    "redacted": "redacted request or primary answer (--allow-redacted sends them, marked)",
    "primary_failed": "primary's answer was an error: nothing to compare with",
    "not_post": "not a POST request",
    "answered": "already answered by this candidate",
    "interrupted": "sent by an earlier run that stopped before storing the answer "
    "(--retry-interrupted sends them again)",
}


@dataclass(frozen=True, slots=True)
class Selection:
    since: datetime | None = None
    until: datetime | None = None
    route: str | None = None
    sample: int | None = None  # a random sample of this many replayable requests (by seed)
    limit: int | None = None  # the oldest this many replayable requests
    seed: int = 0
    allow_redacted: bool = False
    retry_interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Relations:
    """Where recorded exchanges are read from (table names or `read_parquet(...)`); answers
    and claims are always those of the database the replay writes to."""

    exchanges: str
    responses: str
    scores: str
    description: str

    @classmethod
    def local(cls, path: str = "the database") -> Relations:
        return cls("exchanges", "responses", "scores", str(path))

    @classmethod
    def parquet(cls, directory: str) -> Relations:
        exchanges, responses, scores = parquet_relations(directory)
        return cls(exchanges, responses, scores, f"Parquet under {directory}")

    @property
    def is_local(self) -> bool:
        return self.exchanges == "exchanges"


@dataclass(slots=True)
class Recorded:
    """One recorded request, ready to send, with the primary's answer to score against."""

    request_id: str
    started_at: datetime
    method: str
    path: str
    route: str
    model: str | None
    stream: bool
    body: bytes
    request_json: dict[str, Any]
    primary: Completion
    redacted: bool
    dialect: str | None = None  # the recorded route's API (None: recorded before dialects)


@dataclass(slots=True)
class Plan:
    target: str
    to_send: int
    skipped: Counter[str] = field(default_factory=Counter)
    in_window: int = 0
    bounds: list[tuple[int, int]] = field(default_factory=list)  # pages: [start, stop) of seq


def _window(selection: Selection) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if selection.since is not None:
        clauses.append("e.started_at >= ?")
        params.append(selection.since)
    if selection.until is not None:
        clauses.append("e.started_at < ?")
        params.append(selection.until)
    if selection.route is not None:
        clauses.append("e.route = ?")
        params.append(selection.route)
    return (" AND ".join(clauses) or "true"), params


CLASSIFY_SQL = """
CREATE OR REPLACE TEMPORARY TABLE replay_window AS
SELECT e.request_id, e.started_at,
    CASE
        WHEN e.method IS DISTINCT FROM 'POST' THEN 'not_post'
        WHEN e.request_body IS NULL THEN 'no_body'
        WHEN {truncated} THEN 'truncated'
        WHEN json_type(e.request_body) IS DISTINCT FROM 'OBJECT' THEN 'not_json'
        WHEN p.request_id IS NULL OR p.error IS NOT NULL OR p.status IS NULL
            OR p.status NOT BETWEEN 200 AND 299 THEN 'primary_failed'
        WHEN NOT $allow_redacted AND {redacted} THEN 'redacted'
    END AS reason,
    {redacted} AS redacted,
    coalesce(strlen(CAST(e.request_body AS VARCHAR)), 0) AS body_chars,
    e.row_at AS exchange_row, p.row_at AS primary_row
FROM (SELECT DISTINCT ON (request_id) *, {row_at} FROM {exchanges}) AS e
LEFT JOIN (
    SELECT DISTINCT ON (request_id) *, {row_at} FROM {responses} WHERE role = 'primary'
) AS p ON p.request_id = e.request_id
WHERE {window}
"""
# Cut by the recorder (`shadowtap.recorder.caps`): a body stored as a JSON string that starts
# with the mark, or a primary answer that ends with it.
TRUNCATED_SQL = (
    "coalesce(starts_with(CAST(e.request_body AS VARCHAR), '\"[TRUNCATED: ')"
    " OR regexp_matches(p.text, '\\n\\[TRUNCATED: \\d+ bytes, the first \\d+ kept\\]$'),"
    " false)"
)
REDACTED_SQL = (
    "coalesce(contains(CAST(e.request_body AS VARCHAR), '[REDACTED:')"
    " OR contains(p.text, '[REDACTED:')"
    " OR contains(CAST(p.tool_calls AS VARCHAR), '[REDACTED:'), false)"
)


def make_plan(
    con: duckdb.DuckDBPyConnection, relations: Relations, target: str, selection: Selection
) -> Plan:
    """Classify the window, sample it, leave out what the candidate has already; the requests
    to send go into the temporary table `replay_plan` (seq, request_id, redacted)."""
    for name, value in (("--sample", selection.sample), ("--limit", selection.limit)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be 1 or more (got {value})")
    where, params = _window(selection)
    sql = CLASSIFY_SQL.format(
        # Where each row is, so a page reads its rows alone (a local table's rowid is stable
        # while the replay holds the file: it only appends to `responses`).
        row_at="rowid AS row_at" if relations.is_local else "NULL::BIGINT AS row_at",
        redacted=REDACTED_SQL,
        truncated=TRUNCATED_SQL,
        exchanges=relations.exchanges,
        responses=relations.responses,
        window=where,
    )
    allow = "true" if selection.allow_redacted else "false"
    con.execute(sql.replace("$allow_redacted", allow), params)
    plan = Plan(target, 0)
    for reason, count in con.execute(
        "SELECT reason, count(*) FROM replay_window WHERE reason IS NOT NULL GROUP BY reason"
    ).fetchall():
        plan.skipped[reason] = int(count)
    row = con.execute("SELECT count(*) FROM replay_window").fetchone()
    plan.in_window = int(row[0]) if row else 0

    # Sampled among every replayable request, done ones included, so a rerun of the same
    # command picks the same sample and only finishes it.
    if selection.sample is not None:
        order, count = "md5(CAST(? AS VARCHAR) || '/' || request_id)", selection.sample
        order_params: list[Any] = [selection.seed]
    else:
        order, count, order_params = "started_at, request_id", selection.limit, []
    limit = "" if count is None else f"LIMIT {int(count)}"
    answered = "SELECT request_id FROM responses WHERE target = $target"
    if not relations.is_local:
        answered += f" UNION SELECT request_id FROM {relations.responses} WHERE target = $target"
    claimed = "SELECT request_id FROM replay_claims WHERE target = $target"
    con.execute(
        f"""
        CREATE OR REPLACE TEMPORARY TABLE replay_chosen AS
        SELECT w.request_id, w.started_at, w.redacted, w.body_chars, w.exchange_row,
            w.primary_row,
            CASE WHEN w.request_id IN ({answered}) THEN 'answered'
                 WHEN w.request_id IN ({claimed}) THEN 'interrupted' END AS done
        FROM (SELECT * FROM replay_window WHERE reason IS NULL ORDER BY {order} {limit}) AS w
        """.replace("$target", "?"),
        [target, *([] if relations.is_local else [target]), target, *order_params],
    )
    for done, count in con.execute(
        "SELECT done, count(*) FROM replay_chosen WHERE done IS NOT NULL GROUP BY done"
    ).fetchall():
        if done == "interrupted" and selection.retry_interrupted:
            continue
        plan.skipped[done] = int(count)
    resend = "done = 'interrupted'" if selection.retry_interrupted else "false"
    con.execute(
        f"""
        CREATE OR REPLACE TEMPORARY TABLE {PLAN_TABLE} AS
        SELECT row_number() OVER (ORDER BY started_at, request_id) - 1 AS seq, request_id,
            redacted, body_chars, exchange_row, primary_row
        FROM replay_chosen WHERE done IS NULL OR {resend}
        """
    )
    sizes = [
        r[0] for r in con.execute(f"SELECT body_chars FROM {PLAN_TABLE} ORDER BY seq").fetchall()
    ]
    plan.to_send = len(sizes)
    plan.bounds = page_bounds(sizes)
    return plan


def page_bounds(
    sizes: list[int], max_rows: int = PAGE_ROWS, max_chars: int = PAGE_CHARS
) -> list[tuple[int, int]]:
    """[start, stop) of each page: at most `max_rows` requests and, past the first, at most
    `max_chars` of stored bodies (bodies may be up to server.max_body_bytes each)."""
    bounds, start, held = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= max_rows or held + size > max_chars):
            bounds.append((start, index))
            start, held = index, 0
        held += size
    if start < len(sizes):
        bounds.append((start, len(sizes)))
    return bounds


def copy_recorded(con: duckdb.DuckDBPyConnection, relations: Relations) -> None:
    """From a Parquet source: the planned exchanges' recorded rows (the exchange, the primary's
    and the secondary's answers and scores) copied into the database the replay writes, so its
    `pairs` view and `shadowtap report --db` see the replayed pairs whole. Rows are copied as
    stored (already redacted as storage redacts); exchanges the database has are left alone."""
    if relations.is_local:
        return
    new = (
        f"request_id IN (SELECT request_id FROM {PLAN_TABLE})"
        " AND request_id NOT IN (SELECT request_id FROM exchanges)"
    )
    con.execute("BEGIN TRANSACTION")
    try:
        for table, relation, only in (
            ("responses", relations.responses, "role <> 'candidate'"),
            ("scores", relations.scores, "target IN ('primary', 'secondary')"),
            ("exchanges", relations.exchanges, "true"),  # last: `new` reads this table
        ):
            present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
            cols = ", ".join(c for c in COLUMNS[table] if c in present)
            con.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {relation} WHERE {new} AND {only}"
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# A page from a local file reads its rows by rowid; deduplicating the whole relation for each
# page (Parquet, which has no rowid) reads all of it every time.
LOCAL_PAGE = """
WITH q AS (SELECT * FROM {plan} WHERE seq >= ? AND seq < ?)
SELECT q.request_id, e.started_at, e.method, e.path, e.route, e.model, e.stream,
    CAST(e.request_body AS VARCHAR), q.redacted,
    p.status, p.error, p.latency_ms, p.ttft_ms, p.text, CAST(p.tool_calls AS VARCHAR),
    p.finish_reason, p.prompt_tokens, p.completion_tokens, p.response_model, {dialect}
FROM q
JOIN {exchanges} AS e ON e.rowid = q.exchange_row
JOIN {responses} AS p ON p.rowid = q.primary_row
ORDER BY q.seq
"""
PAGE_SQL = """
SELECT q.request_id, e.started_at, e.method, e.path, e.route, e.model, e.stream,
    CAST(e.request_body AS VARCHAR), q.redacted,
    p.status, p.error, p.latency_ms, p.ttft_ms, p.text, CAST(p.tool_calls AS VARCHAR),
    p.finish_reason, p.prompt_tokens, p.completion_tokens, p.response_model, {dialect}
FROM {plan} AS q
JOIN (SELECT DISTINCT ON (request_id) * FROM {exchanges}) AS e ON e.request_id = q.request_id
JOIN (
    SELECT DISTINCT ON (request_id) * FROM {responses} WHERE role = 'primary'
) AS p ON p.request_id = q.request_id
WHERE q.seq >= ? AND q.seq < ?
ORDER BY q.seq
"""


def load_page(
    con: duckdb.DuckDBPyConnection, relations: Relations, start: int, stop: int
) -> tuple[list[Recorded], int]:
    """The planned requests `start` to `stop`, and how many of them could not be read back (a
    body DuckDB calls a JSON object that orjson refuses: too deep, a huge number)."""
    sql = (LOCAL_PAGE if relations.is_local else PAGE_SQL).format(
        plan=PLAN_TABLE,
        exchanges=relations.exchanges,
        responses=relations.responses,
        dialect="e.dialect" if _has_dialect(con, relations.exchanges) else "NULL",
    )
    page, unreadable = [], 0
    for row in con.execute(sql, [start, stop]).fetchall():
        (request_id, started_at, method, path, route, model, stream, body, redacted) = row[:9]
        try:
            request_json = orjson.loads(body)
        except orjson.JSONDecodeError:
            unreadable += 1
            continue
        page.append(
            Recorded(
                request_id=request_id,
                started_at=started_at,
                method=method,
                path=path,
                route=route or path,
                model=model,
                stream=bool(stream),
                # The stored text is the request as the client sent it (re-serialized).
                body=body.encode(),
                request_json=request_json,
                primary=recorded_completion(*row[9:19]),
                redacted=bool(redacted),
                dialect=row[19],
            )
        )
    return page, unreadable


def _has_dialect(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    """Files recorded before migration 5 (Parquet rolls included) have no `dialect`."""
    columns = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return any(column[0] == "dialect" for column in columns)
