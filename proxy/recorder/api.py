"""The admin API's live view of the data: `serve` holds DuckDB's single write lock, so users
and dashboards read the pairs through the writer's own connection instead of the file.

    GET /api/pairs?limit=100&target=small&since=2025-01-31T00:00:00Z[&cursor=...]
        -> {"pairs": [<rows of the pairs view, newest first>],
            "next": <cursor for the following page, or null>,
            "thresholds": {"similarity": 0.8}}
    GET /api/summary[?since=...]
        -> {"targets": {"small": {"role": "candidate", "pairs": 120, "errors": 3,
                                  "mean_latency_ms": 812.4, "p95_latency_ms": 1630.0,
                                  "agreement": {"similarity": 0.91}}}}

Mounted on `server.admin_listen` only, never on the proxy's listener.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from shadowtap.recorder.writer import Recorder, RecorderClosed

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
JSON_COLUMNS = ("request_body", "primary_tool_calls", "candidate_tool_calls")

SUMMARY_SQL = """
SELECT target, any_value(role) AS role, count(*) AS pairs,
       count(*) FILTER (WHERE error IS NOT NULL OR status IS NULL
                        OR status NOT BETWEEN 200 AND 299) AS errors,
       avg(latency_ms) AS mean_latency_ms,
       quantile_cont(latency_ms, 0.95) AS p95_latency_ms
FROM responses
WHERE request_id IN (SELECT request_id FROM exchanges WHERE started_at >= $since)
GROUP BY target ORDER BY target
"""
AGREEMENT_SQL = """
SELECT target, scorer, avg(score) AS agreement
FROM scores
WHERE score IS NOT NULL
  AND request_id IN (SELECT request_id FROM exchanges WHERE started_at >= $since)
GROUP BY target, scorer ORDER BY target, scorer
"""
THRESHOLDS_SQL = """
SELECT scorer, arg_max(threshold, request_id) AS threshold
FROM scores WHERE threshold IS NOT NULL GROUP BY scorer
"""
# Keyset paging: a page resumes strictly after the last row of the previous one, so rows
# arriving meanwhile never shift or repeat a page (as OFFSET would).
AFTER_CURSOR = """ AND (started_at < $c_at OR (started_at = $c_at AND (request_id < $c_id
    OR (request_id = $c_id AND target > $c_target))))"""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadQuery(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(
            text=orjson.dumps({"error": message}).decode(), content_type="application/json"
        )


def _json(data: Any) -> web.Response:
    # orjson writes datetimes as ISO 8601 and NaN as null; `default=str` covers the rest.
    return web.Response(body=orjson.dumps(data, default=str), content_type="application/json")


def _since(request: web.Request) -> datetime:
    raw = request.query.get("since")
    if raw is None:
        return EPOCH
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadQuery(f"since: not an ISO 8601 timestamp (got {raw!r})") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadQuery(f"limit: must be an integer from 1 to {MAX_LIMIT} (got {raw!r})")
    return int(raw)


def _encode_cursor(row: dict[str, Any]) -> str:
    key = [row["started_at"].isoformat(), row["request_id"], row["target"]]
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode()


def _cursor(request: web.Request) -> dict[str, Any] | None:
    raw = request.query.get("cursor")
    if raw is None:
        return None
    try:
        at, request_id, target = orjson.loads(base64.urlsafe_b64decode(raw.encode()))
        return {"c_at": datetime.fromisoformat(at), "c_id": request_id, "c_target": target}
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadQuery("cursor: not a cursor this server handed out") from None


async def _read(recorder: Recorder, sql: str, params: dict[str, Any]) -> list[dict]:
    # DuckDB releases the GIL while it works; a thread keeps the event loop (and so the
    # primary path) free during a large read.
    try:
        return await asyncio.to_thread(recorder.query, sql, params)
    except RecorderClosed as error:  # closed, or degraded: the message says which and why
        raise web.HTTPServiceUnavailable(
            text=orjson.dumps({"error": str(error)}).decode(), content_type="application/json"
        ) from None


def api_routes(recorder: Recorder) -> list[web.RouteDef]:
    async def pairs(request: web.Request) -> web.Response:
        params: dict[str, Any] = {"since": _since(request), "limit": _limit(request)}
        where = "started_at >= $since"
        target = request.query.get("target")
        if target is not None:
            where += " AND target = $target"
            params["target"] = target
        cursor = _cursor(request)
        if cursor is not None:
            where += AFTER_CURSOR
            params |= cursor
        rows = await _read(
            recorder,
            f"SELECT * FROM pairs WHERE {where}"
            " ORDER BY started_at DESC, request_id DESC, target LIMIT $limit",
            params,
        )
        next_cursor = _encode_cursor(rows[-1]) if len(rows) == params["limit"] else None
        for row in rows:
            for column in JSON_COLUMNS:
                if isinstance(row.get(column), str):
                    row[column] = orjson.loads(row[column])
        thresholds = {
            row["scorer"]: row["threshold"] for row in await _read(recorder, THRESHOLDS_SQL, {})
        }
        return _json({"pairs": rows, "next": next_cursor, "thresholds": thresholds})

    async def summary(request: web.Request) -> web.Response:
        params = {"since": _since(request)}
        targets: dict[str, dict[str, Any]] = {}
        for row in await _read(recorder, SUMMARY_SQL, params):
            name = row.pop("target")
            targets[name] = {**row, "agreement": {}}
        for row in await _read(recorder, AGREEMENT_SQL, params):
            if row["target"] in targets:
                targets[row["target"]]["agreement"][row["scorer"]] = row["agreement"]
        return _json({"targets": targets})

    return [web.get("/api/pairs", pairs), web.get("/api/summary", summary)]
