"""Turning a batch of `Exchange`s into columns of plain Python values, privacy applied.

One list per column, filled in one pass (one comprehension per column), then handed to DuckDB
as NumPy object arrays (`frames`), DuckDB's bulk path (row-at-a-time `executemany` is ~100x
slower). No Arrow: the serving process never imports pyarrow.

Whatever a client or an upstream sent, the exchange is stored: a `model` of any JSON type is
kept as its JSON text (capped), a count outside the INTEGER columns' range (a candidate's
`"prompt_tokens": 10000000000`) as NULL, a body orjson cannot write back (nesting past 255,
an integer past 64 bits) as its raw text (its escapes as orjson writes them, so that a key
the client escaped, `\\/`, `\\u0074`, is scrubbed like any), and a lone surrogate (Python
strings may hold one, UTF-8 cannot) as its escape (`\\udc80`). Every free-text field is
scrubbed of the exact credentials its request carried and of credential shapes
(`shadowtap.redact`) before it leaves this module.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from shadowtap.completion import ToolCall
from shadowtap.exchange import Exchange
from shadowtap.headers import SLICE_VALUE_CHARS
from shadowtap.recorder.caps import TextCap
from shadowtap.recorder.precut import GUARD, JsonCut, window
from shadowtap.recorder.schema import SCHEMA, TABLES
from shadowtap.redact import ExactSecrets, redact, redact_json_text

Bodies = Literal["full", "redacted", "none"]
Secrets = ExactSecrets | None
# One table's rows as columns: column name -> one value per row, in `schema.COLUMNS` order.
Columns = dict[str, list[Any]]
# A batch: table name -> its columns.
Batch = dict[str, Columns]

MODEL_MAX_CHARS = 256  # the "model" column is a label for grouping; the body keeps the rest
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


class Privacy:
    """What `storage.bodies` keeps of each free-text field (see `shadowtap.redact`). Every
    method takes the exchange's exact secrets (None when its request carried none)."""

    def __init__(self, bodies: Bodies) -> None:
        self.keep_bodies = bodies != "none"
        # "full" still scrubs credentials; personal data only goes in "full".
        self.pii = bodies != "full"

    def text(self, value: str | None, secrets: Secrets = None) -> str | None:
        if value is None or not self.keep_bodies:
            return None
        return redact(value, pii=self.pii, secrets=secrets)

    def metadata(self, value: str | None, secrets: Secrets = None) -> str | None:
        """Errors and paths are kept in every mode (they are how failures are diagnosed), but
        an upstream error can echo the rejected key or the user's prompt, so they are scrubbed."""
        if value is None:
            return None
        return redact(value, pii=self.pii, secrets=secrets)

    def model(self, value: Any, secrets: Secrets = None) -> str | None:
        """The client's `model` as text whatever its JSON type, scrubbed, then capped."""
        if value is None:
            return None
        if isinstance(value, str):  # a label, like the response's model: exact secrets only
            text = value if secrets is None else secrets.scrub(value)
        else:  # any JSON the client sent: scrubbed like free text
            text = redact(_json_or_repr(value), pii=self.pii, secrets=secrets)
        return text[:MODEL_MAX_CHARS]

    def request_body(
        self, exchange: Exchange, secrets: Secrets = None, cap: TextCap | None = None
    ) -> str | None:
        """The body as stored: scrubbed, and cut by `cap` (its long strings cut first at a
        point no secret straddles, `precut`, so only what may be stored is scrubbed)."""
        if not self.keep_bodies:
            return None
        cap = cap or TextCap(0)
        # The proxy keeps only the raw body (never raw and parsed at once): parsed here, on
        # the writer's thread, when no earlier stage left it parsed.
        parsed = exchange.request_json
        if parsed is None:
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(exchange.request_body)
        if isinstance(parsed, dict):
            try:
                cut = JsonCut(cap.limit, secrets)
                # A string can only be past the guard in a body that long (or one parsed
                # earlier, whose raw bytes are gone).
                if cap.limit > 0 and (
                    not exchange.request_body or len(exchange.request_body) > GUARD * cap.limit
                ):
                    parsed = cut.walk(parsed)
                text = redact_json_text(parsed, pii=self.pii, secrets=secrets)
                return cap.json("request_body", text, cut.dropped)
            except TypeError:
                pass  # orjson cannot write it back (see module docstring): the raw text below
        if not exchange.request_body:
            return None
        # Not JSON: stored as a JSON string so the column stays valid JSON.
        raw = bytes(exchange.request_body).decode("utf-8", "replace")
        if parsed is not None and "\\" in raw:  # JSON orjson reads but cannot write (nesting)
            raw = _ESCAPE.sub(_as_orjson_escapes, raw)
        head = window(raw, cap.limit, secrets)
        # (No lone surrogate in `raw`: decoded with "replace". Bytes of JSON, less the quotes.)
        dropped = 0 if head is None else len(orjson.dumps(raw[len(head) :])) - 2
        text = _dumps(redact(raw if head is None else head, pii=self.pii, secrets=secrets))
        return cap.json("request_body", text, dropped)

    def slice_headers(self, values: dict[str, str], secrets: Secrets = None) -> str | None:
        """The [report] slice_by headers' values (e.g. a tenant), scrubbed like any text, then
        cut to SLICE_VALUE_CHARS."""
        if not values:
            return None
        pii = self.pii
        return _dumps(
            {k: redact(v, pii=pii, secrets=secrets)[:SLICE_VALUE_CHARS] for k, v in values.items()}
        )

    def tool_calls(self, calls: list[ToolCall], secrets: Secrets = None) -> str | None:
        if not calls:
            return None
        if not self.keep_bodies:
            # Which tools were called is metadata; their arguments are user content.
            return _dumps(
                [{"id": _exact(c.id, secrets), "name": _exact(c.name, secrets)} for c in calls]
            )
        pii = self.pii
        if secrets is None:  # the common case, kept to one comprehension
            return _dumps(
                [
                    {"id": c.id, "name": c.name, "arguments": redact(c.arguments, pii=pii)}
                    for c in calls
                ]
            )
        return _dumps(
            [
                {
                    "id": _exact(c.id, secrets),
                    "name": secrets.scrub(c.name),
                    "arguments": redact(c.arguments, pii=pii, secrets=secrets),
                }
                for c in calls
            ]
        )

    def detail(self, detail: dict[str, Any] | None, secrets: Secrets = None) -> str | None:
        # Scorer details may quote either answer, so they follow the body setting.
        if detail is None or not self.keep_bodies:
            return None
        try:
            return redact_json_text(detail, pii=self.pii, secrets=secrets)
        except TypeError:  # a plug-in's detail orjson cannot write: kept as text
            return _dumps(redact(_json_or_repr(detail), pii=self.pii, secrets=secrets))

    # Whole columns at once: the writer's hot path (one comprehension per column is about
    # twice as fast as appending value by value).
    def texts(self, values: list[str | None], secrets: list[Secrets]) -> list[str | None]:
        if not self.keep_bodies:
            return [None] * len(values)
        return self.metadatas(values, secrets)

    def metadatas(self, values: list[str | None], secrets: list[Secrets]) -> list[str | None]:
        pii = self.pii
        if not any(secrets):  # no request in the batch carried a credential
            return [None if v is None else redact(v, pii=pii) for v in values]
        return [
            None if v is None else redact(v, pii=pii, secrets=s)
            for v, s in zip(values, secrets, strict=True)
        ]

    @staticmethod
    def labels(values: list[str | None], secrets: list[Secrets]) -> list[str | None]:
        """Short upstream or client labels (method, finish reason, model names): only the
        exact secrets are checked (one substring test); no shape fits in a label anyway."""
        return [
            v if s is None or v is None else s.scrub(v)
            for v, s in zip(values, secrets, strict=True)
        ]

    def details(
        self, values: list[dict[str, Any] | None], secrets: list[Secrets]
    ) -> list[str | None]:
        if not self.keep_bodies:
            return [None] * len(values)
        pii = self.pii
        try:
            return [
                None if v is None else redact_json_text(v, pii=pii, secrets=s)
                for v, s in zip(values, secrets, strict=True)
            ]
        except TypeError:  # a plug-in's detail orjson cannot write: one by one, see `detail`
            return [self.detail(v, s) for v, s in zip(values, secrets, strict=True)]


def _exact(value: str | None, secrets: Secrets) -> str | None:
    return value if secrets is None or value is None else secrets.scrub(value)


def clean_text(text: str) -> str:
    """`text` as valid Unicode: a lone surrogate becomes its escape (`\\udc80`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    return value


# A JSON escape (an escaped backslash, `\\`, is one, so it never starts another).
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([\s\S]))")


def _as_orjson_escapes(escape: re.Match[str]) -> str:
    """A JSON escape as orjson writes its character (`\\/` and `\\u0074` as `/` and `t`,
    `\\u000A` as `\\n`): a secret the client's encoder escaped so then reads as one of the
    forms `ExactSecrets` scrubs. A surrogate's escape is left as it is."""
    code, char = escape.groups()
    if char is not None:
        return "/" if char == "/" else escape.group()
    value = chr(int(code, 16))
    if "\ud800" <= value <= "\udfff":
        return escape.group()
    return orjson.dumps(value).decode()[1:-1]


def _dumps(value: Any) -> str:
    """JSON text of plain strings, lists and dicts, lone surrogates escaped if need be."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(_clean_json(value)).decode()


def _json_or_repr(value: Any) -> str:
    """JSON text of any value, or its repr where JSON cannot hold it (never raises)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        pass
    try:
        return clean_text(repr(value))
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"


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
