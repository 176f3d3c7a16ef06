"""The rows an export reads: recorded requests with the primary's answer (and, asked for, one
candidate's), the storage's redaction applied once more, and why each left-out row was.

Redaction: what is exported never holds more than storage keeps under the export's level
(`storage.bodies` of `--config`, else the storage default "redacted"), whatever level the rows
were recorded under. A row whose text carries a `[REDACTED:...]` marker is not the client's
question (or not the model's answer), so it is left out unless `allow_redacted`.

Example:

    for row in read_rows(con, ExportQuery(candidate="small"), Privacy("redacted"), left_out):
        row.request, row.primary, row.candidate
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import orjson
from shadowtap.completion import Completion
from shadowtap.recorder.caps import CUT_TEXT, TRUNCATION_MARK
from shadowtap.recorder.privacy import Privacy
from shadowtap.redact import redact_json
from shadowtap.replay.source import REDACTION_MARK
from shadowtap.replay.stored import recorded_completion

FETCH_ROWS = 500

REASONS = {
    "no_body": "request body not stored (storage.bodies = none)",
    "not_json": "request body is not a JSON object",
    "truncated": "request or an answer cut at storage.max_text_bytes",
    "redacted": "redacted text (--allow-redacted keeps them, markers and all)",
    "no_primary": "no primary answer stored",
    "primary_failed": "primary's answer was an error (no assistant message to export)",
    "not_chat": "not a chat request (no messages list)",
    "batch_route": "route not accepted by the Batch API",
    "no_score": "the scorer gave this pair no score (not applicable or failed)",
    "agreed": "not a disagreement (score at or above --below)",
}


@dataclass(frozen=True, slots=True)
class ExportQuery:
    since: datetime | None = None
    until: datetime | None = None
    route: str | None = None
    candidate: str | None = None
    scorer: str | None = None  # with `below`: only pairs scoring under it
    below: float | None = None
    allow_redacted: bool = False


@dataclass(slots=True)
class ExportRow:
    request_id: str
    started_at: datetime
    route: str | None
    path: str
    model: str | None
    request: dict[str, Any]
    primary: Completion
    candidate: Completion | None = None
    candidate_name: str | None = None
    candidate_source: str | None = None
    candidate_latency_ms: float | None = None
    scores: dict[str, float | None] | None = None


ANSWER = (
    "{s}.status, {s}.error, {s}.latency_ms, {s}.ttft_ms, {s}.text,"
    " CAST({s}.tool_calls AS VARCHAR), {s}.finish_reason, {s}.prompt_tokens,"
    " {s}.completion_tokens, {s}.response_model"
)


def _sql(query: ExportQuery) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for clause, value in (
        ("e.started_at >= ?", query.since),
        ("e.started_at < ?", query.until),
        ("e.route = ?", query.route),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    candidate = ""
    columns = "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
    if query.candidate is not None:
        candidate = (
            "JOIN (SELECT DISTINCT ON (request_id) * FROM responses WHERE target = ?) AS c"
            " ON c.request_id = e.request_id"
            " LEFT JOIN (SELECT request_id, map(list(scorer), list(score)) AS scores FROM"
            " (SELECT request_id, scorer, avg(score) AS score FROM scores WHERE target = ?"
            " GROUP BY ALL) GROUP BY request_id) AS s ON s.request_id = e.request_id"
        )
        params = [query.candidate, query.candidate, *params]
        columns = f"c.target, c.source, {ANSWER.format(s='c')}, s.scores"
    sql = f"""
        SELECT e.request_id, e.started_at, e.route, e.path, e.model,
            CAST(e.request_body AS VARCHAR), p.request_id IS NOT NULL,
            {ANSWER.format(s="p")}, {columns}
        FROM (SELECT DISTINCT ON (request_id) * FROM exchanges) AS e
        LEFT JOIN (
            SELECT DISTINCT ON (request_id) * FROM responses WHERE role = 'primary'
        ) AS p ON p.request_id = e.request_id
        {candidate}
        WHERE {" AND ".join(clauses) or "true"}
        ORDER BY e.started_at, e.request_id
    """
    return sql, params


def read_rows(
    con: duckdb.DuckDBPyConnection,
    query: ExportQuery,
    privacy: Privacy,
    left_out: Counter[str],
) -> Iterator[ExportRow]:
    """Every selected row that can be exported, in recording order; the others are counted
    in `left_out` by reason (see REASONS)."""
    sql, params = _sql(query)
    cursor = con.execute(sql, params)
    while batch := cursor.fetchmany(FETCH_ROWS):
        for raw in batch:
            row = _row(raw, query, privacy, left_out)
            if row is not None:
                yield row


def _row(
    raw: tuple[Any, ...], query: ExportQuery, privacy: Privacy, left_out: Counter[str]
) -> ExportRow | None:
    request_id, started_at, route, path, model, body, has_primary = raw[:7]
    primary = _answer(raw[7:17], privacy)
    if body is None or not privacy.keep_bodies:
        left_out["no_body"] += 1
        return None
    request = orjson.loads(body)
    if isinstance(request, str) and request.startswith(TRUNCATION_MARK):
        left_out["truncated"] += 1
        return None
    if not isinstance(request, dict):
        left_out["not_json"] += 1
        return None
    request = redact_json(request, pii=privacy.pii)
    if not has_primary:
        left_out["no_primary"] += 1
        return None
    row = ExportRow(request_id, started_at, route, path, model, request, primary)
    if query.candidate is not None:
        row.candidate_name, row.candidate_source = raw[17], raw[18]
        row.candidate = _answer(raw[19:29], privacy)
        row.candidate_latency_ms = raw[21]
        row.scores = dict(raw[29] or {})
        if query.scorer is not None and query.below is not None:
            score = row.scores.get(query.scorer)
            if score is None:
                left_out["no_score"] += 1
                return None
            if score >= query.below:
                left_out["agreed"] += 1
                return None
    if _truncated(row):  # half an answer is no example to learn from
        left_out["truncated"] += 1
        return None
    if not query.allow_redacted and _redacted(row):
        left_out["redacted"] += 1
        return None
    return row


def _answer(columns: tuple[Any, ...], privacy: Privacy) -> Completion:
    completion = recorded_completion(*columns)
    completion.text = privacy.text(completion.text)
    for call in completion.tool_calls:
        call.arguments = privacy.text(call.arguments) or ""
    return completion


def _truncated(row: ExportRow) -> bool:
    answers = [a for a in (row.primary, row.candidate) if a is not None]
    return any(CUT_TEXT.search(a.text or "") for a in answers) or any(
        CUT_TEXT.search(call.arguments) for a in answers for call in a.tool_calls
    )


def _redacted(row: ExportRow) -> bool:
    texts = [orjson.dumps(row.request).decode()]
    for answer in (row.primary, row.candidate):
        if answer is not None:
            texts.append(answer.text or "")
            texts += [call.arguments for call in answer.tool_calls]
    return any(REDACTION_MARK in text for text in texts)
