"""Read an `openai-responses` answer (a Response object, or its SSE events) into a `Completion`.

`text` joins the `output_text` parts of the output messages (a model's `refusal` is the text
when there is no other, as for chat); `function_call` items become tool calls with their
`call_id`; `reasoning` items stay out of the text but their tokens are counted
(`reasoning_tokens`, part of `completion_tokens`). The finish reason comes from the status:
`completed` → stop (tool_calls when the output calls functions), `incomplete` → the mapped
`incomplete_details.reason` (max_output_tokens → length, content_filter); `failed` and an
`error` event set `error`.

Streams are typed events: `response.output_text.delta`, `response.refusal.delta`,
`response.output_item.added`/`.done`, `response.function_call_arguments.delta`/`.done`, and
the terminal `response.completed`, `response.incomplete` or `response.failed`, whose
`response` carries the status and usage. Other event types are ignored.

Example:
    completion = completion_from_json(body, 200)   # or:
    assembler = ResponsesStreamAssembler(); assembler.feed(chunk); assembler.finish(200)
"""

from __future__ import annotations

from typing import Any

from shadowtap.completion import Completion, ToolCall
from shadowtap.dialects.answer import (
    BadShape,
    EventStreamAssembler,
    PartialCall,
    error_message,
    int_or_none,
    load_json,
    short,
)
from shadowtap.dialects.tables import OPENAI_RESPONSES, finish_reason

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_UNFINISHED = frozenset({"queued", "in_progress"})


def completion_from_json(body: bytes, status: int, values: int | None = None) -> Completion:
    """A whole (non-streamed) Responses API answer.

    Example: `completion_from_json(b'{"object": "response", "status": "completed",
    "output": [...], "usage": {...}}', 200).finish_reason == "stop"`
    """
    completion, payload = load_json(body, status, values)
    if payload is None:
        return completion
    try:
        if not isinstance(payload, dict):
            raise BadShape("not a JSON object")
        if payload.get("object") != "response" and error_message(payload) is not None:
            completion.error = error_message(payload)  # an error body with a 2xx status
            return completion
        _read_output(completion, payload.get("output"))
        _read_outcome(completion, payload)
    except BadShape as exc:
        completion.error = f"invalid response body: {exc}"
    return completion


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadShape(f"{where} is not a string")
    return value


def _function_call(item: dict[str, Any], where: str) -> ToolCall:
    call_id = item.get("call_id")
    return ToolCall(
        name=_text(item.get("name"), f"{where}.name"),
        arguments=_text(item.get("arguments", ""), f"{where}.arguments"),
        id=call_id if isinstance(call_id, str) else None,
    )


def _read_output(completion: Completion, output: object) -> None:
    if not isinstance(output, list):
        raise BadShape("output is not a list")
    texts: list[str] = []
    refusals: list[str] = []
    for i, item in enumerate(output):
        if not isinstance(item, dict):
            raise BadShape(f"output[{i}] is not an object")
        if item.get("type") == "function_call":
            completion.tool_calls.append(_function_call(item, f"output[{i}]"))
        elif item.get("type") == "message":
            for j, part in enumerate(item.get("content") or ()):
                if not isinstance(part, dict):
                    raise BadShape(f"output[{i}].content[{j}] is not an object")
                if part.get("type") == "output_text":
                    texts.append(_text(part.get("text"), f"output[{i}].content[{j}].text"))
                elif part.get("type") == "refusal":
                    refusals.append(_text(part.get("refusal"), f"output[{i}].content[{j}]"))
        # reasoning items and hosted tools' calls are not the answer's text or tool calls
    completion.text = _answer_text(texts, refusals, bool(completion.tool_calls))


def _answer_text(texts: list[str], refusals: list[str], called: bool) -> str | None:
    if texts:
        return "".join(texts)
    if refusals:
        return "".join(refusals)
    return None if called else ""


def _read_outcome(completion: Completion, response: dict[str, Any]) -> None:
    """Status, finish reason, usage and model from a Response object."""
    status = response.get("status")
    if status == "completed":
        completion.finish_reason = "tool_calls" if completion.tool_calls else "stop"
    elif status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        completion.finish_reason = finish_reason(OPENAI_RESPONSES, reason or "incomplete")
    elif status == "failed":
        completion.error = error_message(response) or "response failed"
    elif status in _UNFINISHED:  # a background response: the answer is not there yet
        completion.error = f"response is {status}"
    elif isinstance(status, str):
        completion.error = f"response is {short(status)}"
    usage = response.get("usage")
    if isinstance(usage, dict):
        completion.prompt_tokens = int_or_none(usage.get("input_tokens"))
        completion.completion_tokens = int_or_none(usage.get("output_tokens"))
        cached = usage.get("input_tokens_details")
        reasoning = usage.get("output_tokens_details")
        if isinstance(cached, dict):
            completion.cached_tokens = int_or_none(cached.get("cached_tokens"))
        if isinstance(reasoning, dict):
            completion.reasoning_tokens = int_or_none(reasoning.get("reasoning_tokens"))
    model = response.get("model")
    completion.response_model = model if isinstance(model, str) and model else None


class ResponsesStreamAssembler(EventStreamAssembler):
    """Reassembles a Responses API stream (see the module docstring)."""

    terminal = "response.completed"

    def __init__(self) -> None:
        super().__init__()
        self._texts: list[str] = []
        self._refusals: list[str] = []
        self._calls: dict[int, PartialCall] = {}
        self._final: dict[str, Any] | None = None
        self._model: str | None = None

    def _read_json(self, body: bytes, status: int) -> Completion:
        return completion_from_json(body, status)

    def _apply(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "response.output_text.delta":
            self._append(self._texts, payload)
        elif kind == "response.function_call_arguments.delta":
            self._call(payload).arguments.append(_text(payload.get("delta"), "delta"))
        elif kind == "response.function_call_arguments.done":
            self._call(payload).arguments = [_text(payload.get("arguments"), "arguments")]
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = payload.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                whole = _function_call(item, "item")
                call = self._call(payload)
                call.id, call.name = whole.id, whole.name
                if kind.endswith(".done") or whole.arguments:
                    call.arguments = [whole.arguments]
                self._token_seen = True  # the call's start is the answer's first token
        elif kind == "response.refusal.delta":
            self._append(self._refusals, payload)
        elif kind in _TERMINAL:
            response = payload.get("response")
            if not isinstance(response, dict):
                raise BadShape(f"{kind} has no response")
            self._final = response
            self._done = True
        elif kind in ("response.created", "response.in_progress", "response.queued"):
            response = payload.get("response")
            model = response.get("model") if isinstance(response, dict) else None
            self._model = model if isinstance(model, str) and model else self._model
        elif kind == "error":
            message = payload.get("message")
            self._fail(short(message) if isinstance(message, str) and message else "error event")

    def _append(self, into: list[str], payload: dict[str, Any]) -> None:
        delta = _text(payload.get("delta"), "delta")
        into.append(delta)
        self._token_seen = self._token_seen or bool(delta)

    def _call(self, payload: dict[str, Any]) -> PartialCall:
        index = int_or_none(payload.get("output_index"))
        if index is None:
            raise BadShape("a function call event without an output_index")
        return self._calls.setdefault(index, PartialCall())

    def _assemble(self) -> Completion:
        completion = self._completion
        completion.tool_calls = [
            ToolCall(name=call.name or "", arguments="".join(call.arguments), id=call.id)
            for _, call in sorted(self._calls.items())
        ]
        completion.text = _answer_text(self._texts, self._refusals, bool(completion.tool_calls))
        completion.response_model = self._model
        final = self._final
        if final is not None:
            if not self._texts and not self._refusals and not self._calls:
                # A server that sent no deltas: the final response carries the whole answer.
                try:
                    _read_output(completion, final.get("output"))
                except BadShape as exc:
                    self._note_invalid(str(exc))
            try:
                _read_outcome(completion, final)
            except BadShape as exc:
                self._note_invalid(str(exc))
        return completion
