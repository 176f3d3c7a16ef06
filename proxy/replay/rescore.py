"""Scoring a replayed answer after it is stored, and scoring what an earlier run stored but
never scored; the run's scoring runner (`start_scoring`) and the exchange a replayed answer
makes (`replayed_exchange`), which is both stored and scored.

A replay stores each answer as soon as it has it, then scores it and stores the scores in a
later commit: a kill loses at most the scores of the answers being scored. The next run of the
same candidate finds those answers (a replayed `responses` row of the candidate with no
`scores` row for it) and scores them before it sends anything; nothing is sent again.

Example:

    store.record(answer_only(recorded, result, credentials))        # committed first
    exchange = replayed_exchange(recorded, result, credentials)
    await score_answer(scoring, exchange, "small", store, counts)
    await score_unscored(store, scoring, "small", credentials, counts, page_rows=144)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
from prometheus_client import CollectorRegistry
from shadowtap.exchange import Exchange, Score, TargetResult
from shadowtap.metrics import Metrics
from shadowtap.replay.stored import recorded_completion

if TYPE_CHECKING:
    from shadowtap.config import Config
    from shadowtap.replay.progress import ReplayCounts
    from shadowtap.replay.source import Recorded
    from shadowtap.replay.store import ReplayStore
    from shadowtap.scorers.runner import ScoringRunner
    from shadowtap.shadow import ShadowTarget

SIDE = (
    "{t}.status, {t}.error, {t}.latency_ms, {t}.ttft_ms, {t}.text, CAST({t}.tool_calls AS VARCHAR),"
    " {t}.finish_reason, {t}.prompt_tokens, {t}.completion_tokens, {t}.response_model"
)
# Found once, at the start (one scan), then read a page at a time by rowid: a page query that
# searched the tables again would make this quadratic in the file's size.
FIND_SQL = """
CREATE OR REPLACE TEMPORARY TABLE replay_unscored AS
SELECT row_number() OVER (ORDER BY c.request_id) - 1 AS seq, c.rowid AS answer_row,
    e.row_at AS exchange_row, p.row_at AS primary_row
FROM responses AS c
JOIN (SELECT DISTINCT ON (request_id) request_id, rowid AS row_at FROM exchanges) AS e
    ON e.request_id = c.request_id
JOIN (
    SELECT DISTINCT ON (request_id) request_id, rowid AS row_at FROM responses
    WHERE role = 'primary'
) AS p ON p.request_id = c.request_id
WHERE c.target = ? AND c.role = 'candidate' AND c.source LIKE 'replay%'
    AND NOT EXISTS (
        SELECT 1 FROM scores AS s WHERE s.request_id = c.request_id AND s.target = c.target
    )
"""
PAGE_SQL = f"""
WITH u AS (SELECT * FROM replay_unscored WHERE seq >= ? AND seq < ?)
SELECT c.request_id, e.started_at, e.method, e.path, e.route, e.model, e.stream,
    CAST(e.request_body AS VARCHAR), c.cost_usd, c.source, c.replay_run,
    {SIDE.format(t="p")}, {SIDE.format(t="c")}
FROM u
JOIN responses AS c ON c.rowid = u.answer_row
JOIN exchanges AS e ON e.rowid = u.exchange_row
JOIN responses AS p ON p.rowid = u.primary_row
ORDER BY u.seq
"""


async def start_scoring(config: Config, target: ShadowTarget, backlog_limit: int) -> Any:
    """The run's `ScoringRunner` with its workers started, or None without scorers."""
    if not config.scorers:
        return None
    import aiohttp
    from shadowtap.scorers.pool import CpuSettings
    from shadowtap.scorers.registry import build_scorers
    from shadowtap.scorers.runner import ScoringRunner

    metrics = Metrics(CollectorRegistry(), prices={target.name: target.prices})
    # Judges get their own connections: the candidate's are limited to the concurrency.
    # No cookie jar: a cookie one judge answer sets is never sent back with a later request.
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar()
    )
    # The proxy sheds pairs when every worker is busy and its queue is full; a replay waits
    # instead: every answer of the backlog fits in the queue, so the backlog is what holds
    # the sends back while scoring catches up, and no pair is skipped for want of a worker.
    settings = CpuSettings.of(config.server)
    settings = replace(settings, queue_max=max(settings.queue_max, backlog_limit))
    runner = ScoringRunner(build_scorers(config.scorers), metrics, session, settings)
    await runner.wait_ready()  # CPU scorers run in worker processes: start them first
    return runner


def replayed_exchange(
    recorded: Recorded, result: TargetResult, credentials: tuple[str, ...]
) -> Exchange:
    """The recorded request with the primary's recorded answer and the candidate's new one."""
    primary = TargetResult("primary", "primary", recorded.primary)
    results = {"primary": primary, result.target: result}
    return _exchange_of(recorded, credentials, results, recorded.body, recorded.request_json)


def answer_only(recorded: Recorded, result: TargetResult, credentials: tuple[str, ...]) -> Exchange:
    """What is stored of a replayed exchange first: the candidate's answer alone (the exchange
    row and the primary's answer are stored already). Built directly, not as a copy of the
    scored exchange: a replay without scorers never makes that one."""
    return _exchange_of(recorded, credentials, {result.target: result})


def scores_only(exchange: Exchange, scores: list[Score]) -> Exchange:
    """What is stored of a scored exchange then: its scores alone."""
    stored = _exchange_of(exchange, exchange.credentials, {})
    stored.scores = scores
    return stored


def _exchange_of(
    request: Recorded | Exchange,
    credentials: tuple[str, ...],
    results: dict[str, TargetResult],
    body: bytes = b"",
    request_json: dict[str, Any] | None = None,
) -> Exchange:
    """An exchange of `request`'s identity and request line; its body only when the scorers
    read it (what is stored beside an exchange row that exists already needs none)."""
    return Exchange(
        request_id=request.request_id,
        started_at=request.started_at,
        method=request.method,
        path=request.path,
        route=request.route,
        model=request.model,
        stream=request.stream,
        request_body=body,
        request_json=request_json,
        results=results,
        credentials=credentials,
    )


async def score_answer(
    scoring: ScoringRunner,
    exchange: Exchange,
    target: str,
    store: ReplayStore,
    counts: ReplayCounts,
) -> bool:
    """Score the stored answer of `target` in `exchange` and queue its scores for storing;
    True when there were scores to store (per-scorer sampling may leave none)."""
    scores = await scoring.score(exchange)
    # Per-response scorers score the primary again: it has its scores already.
    mine = [s for s in scores if s.target == target]
    counts.unscored += sum(1 for s in mine if s.detail is not None and "skipped" in s.detail)
    if mine:
        store.record(scores_only(exchange, mine))
    return bool(mine)


def find_unscored(con: duckdb.DuckDBPyConnection, target: str) -> int:
    """How many replayed answers of `target` have no score (listed for `load_unscored`)."""
    con.execute(FIND_SQL, [target])
    row = con.execute("SELECT count(*) FROM replay_unscored").fetchone()
    return int(row[0]) if row else 0


def load_unscored(
    con: duckdb.DuckDBPyConnection,
    start: int,
    stop: int,
    target: str,
    credentials: tuple[str, ...],
) -> list[Exchange]:
    """The unscored answers `start` to `stop`, each as the exchange the scorers read (the
    request, the primary's answer and the candidate's)."""
    page = []
    for row in con.execute(PAGE_SQL, [start, stop]).fetchall():
        request_id, started_at, method, path, route, model, stream, body = row[:8]
        cost_usd, source, replay_run = row[8:11]
        try:
            request_json = orjson.loads(body) if body is not None else None
        except orjson.JSONDecodeError:
            request_json = None
        answer = TargetResult(
            target, "candidate", recorded_completion(*row[21:31]), cost_usd, source, replay_run
        )
        page.append(
            Exchange(
                request_id=request_id,
                started_at=started_at,
                method=method,
                path=path,
                route=route or path,
                model=model,
                stream=bool(stream),
                request_body=(body or "").encode(),
                request_json=request_json if isinstance(request_json, dict) else None,
                results={
                    "primary": TargetResult("primary", "primary", recorded_completion(*row[11:21])),
                    target: answer,
                },
                credentials=credentials,
            )
        )
    return page


async def score_unscored(
    store: ReplayStore,
    scoring: ScoringRunner,
    target: str,
    credentials: tuple[str, ...],
    counts: ReplayCounts,
    page_rows: int,
    stopped: Callable[[], Any],
) -> None:
    """Score every replayed answer of `target` an earlier run stored but did not score, a page
    of `page_rows` at a time (all of a page fit in the scoring queue: none is shed)."""
    total = await store.call(find_unscored, target)
    for start in range(0, total, page_rows):
        if stopped():
            return
        page = await store.call(load_unscored, start, start + page_rows, target, credentials)
        scored = await asyncio.gather(
            *(score_answer(scoring, exchange, target, store, counts) for exchange in page)
        )
        counts.rescored += sum(scored)
