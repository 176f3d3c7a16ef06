"""What every dialect's answer reader shares: error shapes, bounded error strings, the bound
on one JSON parse, and an SSE assembler skeleton over `shadowtap.sse`.

Every streaming API shadowtap reads sends one JSON object per event: Anthropic Messages and
OpenAI Responses name each event's `type`, OpenAI chat sends untyped chunks and a `[DONE]`
sentinel; a reader only says what each event does to the answer. Nothing here raises on bad
input: a garbage answer is an outcome to record (`Completion.error`), not a failure of the
proxy, and no event however hostile is parsed in one call that holds the loop for long
(`MAX_EVENT_BYTES`, `shadowtap.normalize.MAX_JSON_VALUES`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import orjson
from shadowtap.completion import Completion
from shadowtap.normalize import MAX_JSON_VALUES, too_many_values
from shadowtap.sse import ServerSentEvent, SSEDecoder

REASON_LIMIT = 120  # error strings end up in DuckDB and logs: keep them short
RAW_LIMIT = 1 << 20  # bytes kept in case a "stream" turns out to be a plain JSON body
MAX_EVENT_BYTES = 1 << 20  # one SSE event's data: LLM stream events are far smaller


class BadShape(ValueError):
    """The JSON parsed but is not shaped like the dialect's answer; the message says where."""


def short(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def error_message(payload: object) -> str | None:
    """The message of `{"error": {"message": ...}}`, the shape both OpenAI and Anthropic use
    (Anthropic adds `"type": "error"` around it), or of a bare error string."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return short(message)
        return short(orjson.dumps(error))
    if isinstance(error, str) and error:
        return short(error)
    return None


def int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def load_json(
    body: bytes, status: int, values: int | None = None, *, bounded: bool = True
) -> tuple[Completion, object]:
    """Start a non-streamed answer: the Completion with `error` set when the status is not
    2xx or the body is not JSON (then the payload is None).

    `bounded` (the default): a body that may hold more than `MAX_JSON_VALUES` values is not
    parsed; `values` is a `json_values_bound` of `body` when the caller counted it already (a
    slice at a time). Embeddings answers bound their own work and are parsed off the loop.
    """
    completion = Completion(status=status)
    if bounded and too_many_values(body, values):
        reason = f"more than {MAX_JSON_VALUES} JSON values, not parsed"
        completion.error = (
            f"invalid response body: {reason}" if 200 <= status < 300 else f"HTTP {status}"
        )
        return completion, None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = "empty body" if not body.strip() else f"not JSON ({short(exc)})"
        if 200 <= status < 300:
            completion.error = f"invalid response body: {reason}"
        else:
            completion.error = f"HTTP {status}"
        return completion, None
    if not 200 <= status < 300:
        completion.error = error_message(payload) or f"HTTP {status}"
        return completion, None
    return completion, payload


class PartialCall:
    """A streamed tool call being assembled: its id and name, and its argument fragments."""

    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []


class EventStreamAssembler(ABC):
    """Reassembles a typed-event SSE answer fed in network chunks of any size.

    Subclasses say what each event type does (`_apply`) and build the result (`_assemble`).
    Like chat's `StreamAssembler`, the caller may stop feeding at any point; `finish` then
    reports the early end. A body that is not SSE at all (a JSON error answer to a streamed
    request) is read by the dialect's whole-body reader instead.
    """

    terminal: ClassVar[str]  # the event type that completes the answer
    sentinel: ClassVar[bytes | None] = None  # a non-JSON event data that completes it
    typed: ClassVar[bool] = True  # events name their kind in `type` (else: the SSE event name)

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._completion = Completion()
        self._done = False
        self._token_seen = False
        self._saw_event = False
        self._stream_error: str | None = None
        self._invalid: str | None = None
        self._raw: list[bytes] | None = []
        self._raw_size = 0

    def feed(self, chunk: bytes) -> bool:
        """Consume one network chunk; True exactly once, for the chunk that completed the
        event carrying the first token (non-empty text, or the start of a tool call)."""
        if self._raw is not None:
            self._raw_size += len(chunk)
            if self._saw_event or self._raw_size > RAW_LIMIT:
                self._raw = None
            else:
                self._raw.append(chunk)
        had_token = self._token_seen
        for event in self._decoder.feed(chunk):
            self._dispatch(event, truncated=False)
        return self._token_seen and not had_token

    def finish(self, status: int) -> Completion:
        """The answer as assembled; `error` says why it is incomplete or unusable."""
        if not self._saw_event and self._raw is not None:
            body = b"".join(self._raw)
            if body.lstrip()[:1] == b"{":
                return self._read_json(body, status)
        tail = self._decoder.close()
        if tail is not None:
            self._dispatch(tail, truncated=True)
        if self._decoder.unexpected_line is not None:
            self._note_invalid(f"unexpected line {short(self._decoder.unexpected_line)}")
        completion = self._assemble()
        completion.status = status
        if not 200 <= status < 300:
            completion.error = self._stream_error or completion.error or f"HTTP {status}"
        elif self._stream_error is not None:
            completion.error = self._stream_error
        elif completion.error is not None:
            pass  # the answer itself reported failure (Responses' response.failed)
        elif self._invalid is not None:
            completion.error = f"invalid stream: {self._invalid}"
        elif not self._done:
            completion.error = f"stream ended before {self.terminal}"
        return completion

    def _dispatch(self, event: ServerSentEvent, truncated: bool) -> None:
        self._saw_event = True
        if self._done:
            return  # nothing after the terminal event belongs to the answer
        data = event.data
        if self.sentinel is not None and data.strip() == self.sentinel:
            self._done = True
            return
        if len(data) > MAX_EVENT_BYTES or too_many_values(data):
            self._note_invalid(f"an event too large to parse ({len(data)} bytes)")
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            if event.event == "error" and self._stream_error is None:
                self._stream_error = short(event.data) or "error event"
            elif not truncated:  # a cut-off last event is reported as the early end
                self._note_invalid(f"data is not JSON: {short(event.data)}")
            return
        if not isinstance(payload, dict):
            self._note_invalid(f"data is not a JSON object: {short(event.data)}")
            return
        kind = payload.get("type") if self.typed else None
        try:
            self._apply(kind if isinstance(kind, str) else event.event, payload)
        except BadShape as exc:
            self._note_invalid(str(exc))

    def _fail(self, message: str) -> None:
        if self._stream_error is None:
            self._stream_error = message

    def _note_invalid(self, reason: str) -> None:
        if self._invalid is None:
            self._invalid = reason

    @abstractmethod
    def _read_json(self, body: bytes, status: int) -> Completion:
        """The dialect's whole-body reader, for a "stream" that turned out to be JSON."""

    @abstractmethod
    def _apply(self, kind: str, payload: dict[str, Any]) -> None:
        """One event. Set `_token_seen` on the first token, `_done` at the terminal event,
        `_fail(message)` on an error event; raise `BadShape` for an event of the wrong shape."""

    @abstractmethod
    def _assemble(self) -> Completion:
        """The Completion built from the events seen so far."""
