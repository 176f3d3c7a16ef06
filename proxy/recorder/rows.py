"""Turning a batch of `Exchange`s into columns of plain Python values, privacy applied.

One list per column, filled in one pass (one comprehension per column), then handed to DuckDB
as NumPy object arrays (`frames`), DuckDB's bulk path (row-at-a-time `executemany` is ~100x
slower). No Arrow: the serving process never imports pyarrow.

Whatever a client or an upstream sent, the exchange is stored: what is kept of each free-text
field, scrubbed and capped, is `privacy.Privacy`'s; a count outside the INTEGER columns' range
(a candidate's `"prompt_tokens": 10000000000`) is stored as NULL, and a lone surrogate (Python
strings may hold one, UTF-8 cannot) as its escape (`\\udc80`).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from shadowtap.exchange import Exchange
from shadowtap.recorder.caps import TextCap
from shadowtap.recorder.privacy import Privacy, Secrets, clean_text
from shadowtap.recorder.schema import SCHEMA, TABLES
from shadowtap.redact import ExactSecrets

# One table's rows as columns: column name -> one value per row, in `schema.COLUMNS` order.
Columns = dict[str, list[Any]]
# A batch: table name -> its columns.
Batch = dict[str, Columns]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# status, prompt_tokens, completion_tokens: INTEGER in DuckDB
INT32_COLUMNS = tuple(
    dict.fromkeys(c.name for table in TABLES for c in SCHEMA[table] if c.type == "INTEGER")
)
# Columns of text, and of lists of text, per table: where a lone surrogate may hide.
TEXT_COLUMNS = {
    table: tuple(c.name for c in columns if c.type in ("VARCHAR", "JSON"))
    for table, columns in SCHEMA.items()
}
TEXT_LIST_COLUMNS = {
    table: tuple(c.name for c in columns if c.type == "VARCHAR[]")
    for table, columns in SCHEMA.items()
}


def _secrets(exchanges: list[Exchange]) -> list[Secrets]:
    """Each exchange's exact secrets; most of a batch carries the same few keys, so each
    distinct set is prepared once."""
    known: dict[tuple[str, ...], Secrets] = {(): None}
    found = []
    for exchange in exchanges:
        credentials = tuple(exchange.credentials)
        secrets = known.get(credentials, _UNSEEN)
        if secrets is _UNSEEN:
            secrets = known[credentials] = ExactSecrets(credentials) or None
        found.append(secrets)
    return found


_UNSEEN: Any = object()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def rows(columns: Columns) -> int:
    return len(next(iter(columns.values()), []))


def checked(table: str, columns: Columns) -> Columns:
    """`columns` with lone surrogates escaped and counts past INTEGER's range made NULL, in
    place. Cheap when there is nothing to fix (the common case): one `isascii()` per text (a
    flag test, run by `map` in C; only a non-ASCII text is encoded) and one min/max per count
    column; only a column found faulty is rebuilt value by value. (Never a join of the whole
    column: that copied every prompt and answer of the batch at once.)"""
    for name in TEXT_COLUMNS.get(table, ()):
        values = columns[name]
        if not _column_valid(values):
            columns[name] = [None if v is None else clean_text(v) for v in values]
    for name in TEXT_LIST_COLUMNS.get(table, ()):
        lists = columns[name]
        if not _lists_valid(lists):
            columns[name] = [[clean_text(x) for x in v] for v in lists]
    for name in INT32_COLUMNS:
        if name not in columns:
            continue
        values = columns[name]
        counts = [v for v in values if v is not None]
        if counts and (min(counts) < INT32_MIN or max(counts) > INT32_MAX):
            columns[name] = [
                v if v is None or INT32_MIN <= v <= INT32_MAX else None for v in values
            ]
    return columns


def _column_valid(values: list[str | None]) -> bool:
    """Every text of a column valid Unicode: ASCII (a flag test, run by `map` in C), or else
    encodable (walked again only when some text is not ASCII, which is rare)."""
    return all(map(str.isascii, filter(None, values))) or all(
        map(_valid_unicode, filter(None, values))
    )


def _lists_valid(lists: list[list[str]]) -> bool:
    """`_column_valid` for a column of lists of text."""
    chain = itertools.chain.from_iterable
    return all(map(str.isascii, chain(lists))) or all(map(_valid_unicode, chain(lists)))


def _valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_columns(exchanges: list[Exchange], privacy: Privacy, cap: TextCap | None = None) -> Batch:
    """The batch's rows, as columns, for each of `schema.TABLES`; each request body cut by
    `cap` as soon as it is made (the other texts are cut after, by `caps.cap_batch`).

    Built column by column: one list comprehension per column over the batch's rows. (No
    per-row tuples: allocating tens of thousands of them wakes the cyclic GC, which then
    walks every object the process holds.)"""
    ex = exchanges
    secrets = _secrets(ex)
    results = [r for e in ex for r in e.results.values()]
    completions = [r.completion for r in results]
    result_secrets = [s for e, s in zip(ex, secrets, strict=True) for _ in e.results]
    scores = [s for e in ex for s in e.scores]
    score_secrets = [s for e, s in zip(ex, secrets, strict=True) for _ in e.scores]
    pairs = list(zip(ex, secrets, strict=True))
    batch = {
        "exchanges": checked(
            "exchanges",
            {
                "request_id": [e.request_id for e in ex],
                "started_at": [_utc(e.started_at) for e in ex],
                "method": privacy.labels([e.method for e in ex], secrets),
                "path": privacy.metadatas([e.path for e in ex], secrets),
                "route": [e.route for e in ex],
                "model": [privacy.model(e.model, s) for e, s in pairs],
                "stream": [e.stream if isinstance(e.stream, bool) else None for e in ex],
                "request_body": [privacy.request_body(e, s, cap) for e, s in pairs],
                "header_names": [[name.lower() for name in e.header_names] for e in ex],
                "slice_headers": [privacy.slice_headers(e.slice_headers, s) for e, s in pairs],
                "dialect": [e.dialect for e in ex],
            },
        ),
        "responses": checked(
            "responses",
            {
                "request_id": [e.request_id for e in ex for _ in e.results],
                "target": [r.target for r in results],
                "role": [r.role for r in results],
                "status": [c.status for c in completions],
                "error": privacy.metadatas([c.error for c in completions], result_secrets),
                "latency_ms": [_ms(c.latency_s) for c in completions],
                "ttft_ms": [_ms(c.ttft_s) for c in completions],
                "text": privacy.texts([c.text for c in completions], result_secrets),
                "tool_calls": [
                    privacy.tool_calls(c.tool_calls, s)
                    for c, s in zip(completions, result_secrets, strict=True)
                ],
                "finish_reason": privacy.labels(
                    [c.finish_reason for c in completions], result_secrets
                ),
                "prompt_tokens": [c.prompt_tokens for c in completions],
                "completion_tokens": [c.completion_tokens for c in completions],
                "response_model": privacy.labels(
                    [c.response_model for c in completions], result_secrets
                ),
                "cost_usd": [r.cost_usd for r in results],
                "source": [r.source for r in results],
                "replay_run": [r.replay_run for r in results],
            },
        ),
        "scores": checked(
            "scores",
            {
                "request_id": [e.request_id for e in ex for _ in e.scores],
                "target": [s.target for s in scores],
                "scorer": [s.scorer for s in scores],
                "score": [s.score for s in scores],
                "detail": privacy.details([s.detail for s in scores], score_secrets),
                "error": privacy.metadatas([s.error for s in scores], score_secrets),
                "threshold": [s.threshold for s in scores],
            },
        ),
    }
    return batch
