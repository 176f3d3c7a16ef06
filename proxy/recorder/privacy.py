"""What `storage.bodies` keeps of each free-text field an exchange is stored with: `Privacy`.

Every free-text field is scrubbed of the exact credentials its request carried and of
credential shapes (`shadowtap.redact`), then cut to `storage.max_text_bytes` (`caps`; a long
request body is cut first at a point no secret straddles, `precut`). A `model` of any JSON type
is kept as its JSON text (capped); a body orjson cannot write back (nesting past 255, an
integer past 64 bits) as its raw text, its escapes as orjson writes them, so that a key the
client escaped (`\\/`, `\\u0074`) is scrubbed like any; a lone surrogate as its escape.
`rows.to_columns` applies it to a whole batch.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Literal

import orjson
from shadowtap.completion import ToolCall
from shadowtap.exchange import Exchange
from shadowtap.headers import SLICE_VALUE_CHARS
from shadowtap.recorder.caps import TextCap
from shadowtap.recorder.precut import GUARD, JsonCut, window
from shadowtap.redact import ExactSecrets, redact, redact_json_text

Bodies = Literal["full", "redacted", "none"]
Secrets = ExactSecrets | None

MODEL_MAX_CHARS = 256  # the "model" column is a label for grouping; the body keeps the rest


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
