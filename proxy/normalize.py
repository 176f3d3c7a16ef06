"""Turn an upstream answer (OpenAI-style JSON or SSE stream) into a `Completion`.

Nothing here raises on bad input: an upstream that returns garbage is an outcome to record
(`Completion.error`), not a failure of the proxy. Only the first choice (`index` 0) is kept,
because a `Completion` is one answer; `n > 1` requests are compared on their first choice.
A structured-outputs refusal (`message.refusal`, content null) becomes `text`: it is what the
model said, and the refusal scorer must see it.

Example:
    assembler = StreamAssembler()
    for chunk in chunks:
        if assembler.feed(chunk):
            ttft = now() - started   # the chunk that carried the first token
    completion = assembler.finish(status=200)
"""

from __future__ import annotations

from typing import Any

import orjson
from shadowtap.completion import Completion, ToolCall
from shadowtap.sse import ServerSentEvent, SSEDecoder

_REASON_LIMIT = 120  # error strings end up in DuckDB and logs: keep them short
_RAW_LIMIT = 1 << 20  # bytes kept in case a "stream" turns out to be a plain JSON body
# One JSON document is parsed in one call that holds the event loop: a few ms at most. orjson
# spends 25-45 ns per value (a megabyte of `[{},{},...]` is 30 ms and 40 MB of objects), so
# documents with more values than this are not parsed. An answer without logprobs has a few
# hundred; 50,000 is ~1,000 tokens of logprobs with 5 alternatives each.
MAX_JSON_VALUES = 50_000
# A document shorter than this cannot hold MAX_JSON_VALUES (each value takes two bytes or more
# with its separator), so only longer ones are counted.
COUNT_FROM = 2 * MAX_JSON_VALUES
MAX_EVENT_BYTES = 1 << 20  # one SSE event's data: LLM stream events are far smaller


class _BadShape(ValueError):
    """The JSON parsed but is not shaped like an OpenAI answer; the message says where."""


def _short(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 1] + "…"


def _error_message(payload: object) -> str | None:
    """The message of OpenAI's `{"error": {"message": ...}}` shape (or a bare error string)."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
        return _short(orjson.dumps(error))
    if isinstance(error, str) and error:
        return error
    return None


def _content_text(content: object) -> str:
    """`content` is a string, or a list of parts of which only the text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
        return "".join(texts)
    raise _BadShape("content is neither a string nor a list of parts")


def _arguments(value: object) -> str:
    # Some OpenAI-compatible servers (e.g. Ollama) send arguments as an object, not a string.
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_choice(choices: object) -> dict[str, Any] | None:
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def _message_tool_calls(message: dict[str, Any]) -> list[ToolCall]:
    calls: list[ToolCall] = []
    raw = message.get("tool_calls")
    if raw is not None and not isinstance(raw, list):
        raise _BadShape("tool_calls is not a list")
    for i, call in enumerate(raw or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _BadShape(f"tool_calls[{i}] has no function name")
        call_id = call.get("id")
        calls.append(
            ToolCall(
                name=function["name"],
                arguments=_arguments(function.get("arguments")),
                id=call_id if isinstance(call_id, str) else None,
            )
        )
    legacy = message.get("function_call")  # the pre-tools API: one call, no id
    if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        calls.append(ToolCall(name=legacy["name"], arguments=_arguments(legacy.get("arguments"))))
    return calls


def _apply_usage_and_model(completion: Completion, payload: dict[str, Any]) -> None:
    usage = payload.get("usage")
    if isinstance(usage, dict):
        # Some servers repeat cumulative usage in every chunk: the last value wins.
        prompt = _int_or_none(usage.get("prompt_tokens"))
        generated = _int_or_none(usage.get("completion_tokens"))
        if prompt is not None:
            completion.prompt_tokens = prompt
        if generated is not None:
            completion.completion_tokens = generated
    model = payload.get("model")
    if completion.response_model is None and isinstance(model, str) and model:
        completion.response_model = model


def json_values_bound(data: bytes) -> int:
    """An upper bound on the values (and keys) parsing `data` as JSON would build: every value
    but the first follows a `,`, `[` or `:` (commas inside strings only make it larger).
    One pass in C, ~4 ns a byte."""
    return len(data) - len(data.translate(None, b",[:"))


def too_many_values(data: bytes, values: int | None = None) -> bool:
    """True when `data` may hold more than MAX_JSON_VALUES (`values`: a bound already known)."""
    if len(data) < COUNT_FROM:
        return False
    return (values if values is not None else json_values_bound(data)) > MAX_JSON_VALUES


def completion_from_json(body: bytes, status: int, values: int | None = None) -> Completion:
    """A whole (non-streamed) chat-completions or legacy completions body. `values` is a
    `json_values_bound` of `body` when the caller counted it already (a slice at a time)."""
    completion = Completion(status=status)
    reason = ""
    if too_many_values(body, values):
        payload = None
        reason = f"more than {MAX_JSON_VALUES} JSON values, not parsed"
    else:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            payload = None
            reason = "empty body" if not body.strip() else f"not JSON ({_short(exc)})"
    if not 200 <= status < 300:
        completion.error = _error_message(payload) or f"HTTP {status}"
        return completion
    if payload is None:
        completion.error = f"invalid response body: {reason}"
        return completion
    try:
        _fill_from_json(completion, payload)
    except _BadShape as exc:
        completion.error = f"invalid response body: {exc}"
    return completion


def _fill_from_json(completion: Completion, payload: object) -> None:
    if not isinstance(payload, dict):
        raise _BadShape("not a JSON object")
    message = _error_message(payload)
    if message is not None:  # some servers answer 200 with an error body
        completion.error = message
        return
    choice = _first_choice(payload.get("choices"))
    if choice is None:
        raise _BadShape("no choices")
    msg = choice.get("message")
    if isinstance(msg, dict):
        content = msg.get("content")
        refusal = msg.get("refusal")
        if content is not None:
            completion.text = _content_text(content)
        elif isinstance(refusal, str):
            completion.text = refusal
        completion.tool_calls = _message_tool_calls(msg)
    elif isinstance(choice.get("text"), str):  # legacy /v1/completions
        completion.text = choice["text"]
    else:
        raise _BadShape("choices[0] has neither message nor text")
    reason = choice.get("finish_reason")
    completion.finish_reason = reason if isinstance(reason, str) else None
    _apply_usage_and_model(completion, payload)


class _PartialCall:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []


class StreamAssembler:
    """Reassembles a chat-completions SSE stream fed in network chunks of any size.

    The caller may stop feeding at any point (a size cap, a timeout); `finish` then returns
    what was assembled, with `error` saying the stream ended early. If the body turns out not
    to be SSE at all (an upstream that ignored `stream: true`, or a JSON error body) it is
    read as JSON instead.
    """

    __slots__ = (
        "_calls",
        "_completion",
        "_decoder",
        "_done",
        "_invalid",
        "_raw",
        "_raw_size",
        "_refusal",
        "_saw_event",
        "_stream_error",
        "_text",
        "_token_seen",
        "bytes_fed",
    )

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._completion = Completion()
        self._text: list[str] | None = None  # None until a content delta appears
        self._refusal: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._done = False
        self._token_seen = False
        self._saw_event = False
        self._stream_error: str | None = None
        self._invalid: str | None = None
        self._raw: list[bytes] | None = []
        self._raw_size = 0
        # Every dialect's assembler counts what it was fed (shadowtap.dialects.Assembler), so
        # a reader can enforce its cap whatever the dialect.
        self.bytes_fed = 0

    def feed(self, chunk: bytes) -> bool:
        """Consume one network chunk; True exactly once, for the chunk that completed the
        event carrying the first token (non-empty text, or any tool-call fragment)."""
        self.bytes_fed += len(chunk)
        if self._raw is not None:
            self._raw_size += len(chunk)
            if self._saw_event or self._raw_size > _RAW_LIMIT:
                self._raw = None
            else:
                self._raw.append(chunk)
        had_token = self._token_seen
        for event in self._decoder.feed(chunk):
            self._apply(event, truncated=False)
        return self._token_seen and not had_token

    def finish(self, status: int) -> Completion:
        if not self._saw_event and self._raw is not None:
            body = b"".join(self._raw)
            if body.lstrip()[:1] == b"{":
                return completion_from_json(body, status)
        tail = self._decoder.close()
        if tail is not None:
            self._apply(tail, truncated=True)
        if self._decoder.unexpected_line is not None:
            self._note_invalid(f"unexpected line {_short(self._decoder.unexpected_line)}")
        completion = self._completion
        completion.status = status
        if self._text:
            completion.text = "".join(self._text)
        elif self._refusal:
            completion.text = "".join(self._refusal)
        elif self._text is not None:
            completion.text = ""
        completion.tool_calls = [
            ToolCall(name=call.name or "", arguments="".join(call.arguments), id=call.id)
            for _, call in sorted(self._calls.items())
        ]
        if not 200 <= status < 300:
            completion.error = self._stream_error or f"HTTP {status}"
        elif self._stream_error is not None:
            completion.error = self._stream_error
        elif self._invalid is not None:
            completion.error = f"invalid stream: {self._invalid}"
        elif not self._done:
            completion.error = "stream ended before [DONE]"
        return completion

    def _apply(self, event: ServerSentEvent, truncated: bool) -> None:
        self._saw_event = True
        if self._done:
            return  # nothing after [DONE] belongs to the answer
        data = event.data.strip()
        if data == b"[DONE]":
            self._done = True
            return
        if len(data) > MAX_EVENT_BYTES or too_many_values(data):
            self._note_invalid(f"an event too large to parse ({len(data)} bytes)")
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            if event.event == "error" and self._stream_error is None:
                self._stream_error = _short(data) or "error event"
            elif not truncated:  # a cut-off last event is reported as the early end, not garbage
                self._note_invalid(f"data is not JSON: {_short(data)}")
            return
        if not isinstance(payload, dict):
            self._note_invalid(f"data is not a JSON object: {_short(data)}")
            return
        message = _error_message(payload)
        if message is None and event.event == "error":
            message = _short(data)
        if message is not None:
            if self._stream_error is None:
                self._stream_error = message
            return
        _apply_usage_and_model(self._completion, payload)
        choices = payload.get("choices")
        if not isinstance(choices, list):
            if choices is not None:
                self._note_invalid("choices is not a list")
            return
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                try:
                    self._apply_choice(choice)
                except _BadShape as exc:
                    self._note_invalid(str(exc))

    def _apply_choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if content is not None:
                self._append_text(_content_text(content))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._refusal.append(refusal)
                self._token_seen = True
            tool_calls = delta.get("tool_calls")
            if tool_calls is not None:
                self._merge_tool_calls(tool_calls)
            legacy = delta.get("function_call")
            if isinstance(legacy, dict):
                self._merge_fragment(self._calls.setdefault(-1, _PartialCall()), legacy, None)
                self._token_seen = True
        elif isinstance(choice.get("text"), str):  # legacy /v1/completions stream
            self._append_text(choice["text"])
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self._completion.finish_reason = reason

    def _append_text(self, text: str) -> None:
        if self._text is None:
            self._text = []
        if text:
            self._text.append(text)
            self._token_seen = True

    def _merge_tool_calls(self, fragments: object) -> None:
        if not isinstance(fragments, list):
            raise _BadShape("delta.tool_calls is not a list")
        for fragment in fragments:
            if not isinstance(fragment, dict):
                raise _BadShape("a tool-call delta is not an object")
            index = _int_or_none(fragment.get("index"))
            if index is None:
                # Servers that omit `index` send whole calls: a new id starts a new call.
                last = max(self._calls, default=-1)
                is_new = last < 0 or fragment.get("id") is not None
                index = last + 1 if is_new else last
            function = fragment.get("function")
            call = self._calls.setdefault(index, _PartialCall())
            self._merge_fragment(call, function if isinstance(function, dict) else {}, fragment)
            self._token_seen = True

    @staticmethod
    def _merge_fragment(
        call: _PartialCall, function: dict[str, Any], fragment: dict[str, Any] | None
    ) -> None:
        call_id = fragment.get("id") if fragment is not None else None
        if call.id is None and isinstance(call_id, str) and call_id:
            call.id = call_id
        name = function.get("name")
        if call.name is None and isinstance(name, str) and name:
            call.name = name
        arguments = function.get("arguments")
        if arguments is not None:
            call.arguments.append(_arguments(arguments))

    def _note_invalid(self, reason: str) -> None:
        if self._invalid is None:
            self._invalid = reason
