"""Read an `anthropic-messages` answer (JSON or SSE) into a `Completion`.

`text` joins the `text` blocks; `tool_use` blocks become tool calls with their `input` as JSON
text; `thinking` blocks and provider-run tools stay out of both. `stop_reason` is mapped to
the shared finish-reason words (see `tables.FINISH_REASONS`): `end_turn` → stop, `max_tokens`
→ length, `tool_use` → tool_calls, `refusal` → content_filter. `prompt_tokens` counts every
input token (`input_tokens` plus cache writes and cache reads, as Anthropic bills them and as
OpenAI counts them); `cached_tokens` is the cache reads, `reasoning_tokens` the thinking.

Streams are the events `message_start`, `content_block_start` / `_delta` (`text_delta`,
`input_json_delta`) / `_stop`, `message_delta` (stop reason, cumulative usage),
`message_stop`, `ping` and `error`; unknown event types are ignored, as the API asks.

Example:
    assembler = AnthropicStreamAssembler()
    for chunk in chunks:
        if assembler.feed(chunk):
            ttft = now() - started
    completion = assembler.finish(status=200)
"""

from __future__ import annotations

from typing import Any

from shadowtap.completion import Completion, ToolCall
from shadowtap.dialects.answer import (
    BadShape,
    EventStreamAssembler,
    error_message,
    int_or_none,
    load_json,
)
from shadowtap.dialects.neutral import Untranslatable
from shadowtap.dialects.tables import ANTHROPIC_MESSAGES, finish_reason
from shadowtap.dialects.wire import arguments_text

_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                 "cache_read_input_tokens")  # fmt: skip


def completion_from_json(body: bytes, status: int, values: int | None = None) -> Completion:
    """A whole (non-streamed) Messages API answer.

    Example: `completion_from_json(b'{"type": "message", "content": [{"type": "text",
    "text": "Hi"}], "stop_reason": "end_turn", ...}', 200).text == "Hi"`
    """
    completion, payload = load_json(body, status, values)
    if payload is None:
        return completion
    try:
        _fill(completion, payload)
    except BadShape as exc:
        completion.error = f"invalid response body: {exc}"
    return completion


def _fill(completion: Completion, payload: object) -> None:
    if not isinstance(payload, dict):
        raise BadShape("not a JSON object")
    message = error_message(payload)
    if message is not None:  # an error body with a 2xx status
        completion.error = message
        return
    content = payload.get("content")
    if not isinstance(content, list):
        raise BadShape("content is not a list")
    texts: list[str] = []
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise BadShape(f"content[{i}] is not an object")
        if block.get("type") == "text":
            texts.append(_text(block.get("text"), f"content[{i}].text"))
        elif block.get("type") == "tool_use":
            completion.tool_calls.append(_tool_call(block, block.get("input"), f"content[{i}]"))
    completion.text = "".join(texts) if texts or not completion.tool_calls else None
    reason = payload.get("stop_reason")
    completion.finish_reason = (
        finish_reason(ANTHROPIC_MESSAGES, reason) if isinstance(reason, str) else None
    )
    _apply_usage(completion, _merge_usage({}, payload.get("usage")))
    model = payload.get("model")
    completion.response_model = model if isinstance(model, str) and model else None


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadShape(f"{where} is not a string")
    return value


def _tool_call(block: dict[str, Any], arguments: object, where: str) -> ToolCall:
    name, call_id = block.get("name"), block.get("id")
    if not isinstance(name, str):
        raise BadShape(f"{where} has no tool name")
    text = _input_text(arguments, where)
    return ToolCall(name=name, arguments=text, id=call_id if isinstance(call_id, str) else None)


def _input_text(value: object, where: str) -> str:
    """A tool_use `input` object as JSON text (a streamed call without deltas keeps its
    start's `input`, usually `{}`)."""
    try:
        return arguments_text({} if value is None else value)
    except Untranslatable:
        raise BadShape(f"{where}.input cannot be encoded") from None


def _merge_usage(merged: dict[str, int], usage: object) -> dict[str, int]:
    """Counts are cumulative: a later event's value replaces an earlier one."""
    if isinstance(usage, dict):
        for name in _USAGE_FIELDS:
            value = int_or_none(usage.get(name))
            if value is not None:
                merged[name] = value
        details = usage.get("output_tokens_details")
        thinking = (
            int_or_none(details.get("thinking_tokens")) if isinstance(details, dict) else None
        )
        if thinking is not None:
            merged["thinking_tokens"] = thinking
    return merged


def _apply_usage(completion: Completion, usage: dict[str, int]) -> None:
    if "input_tokens" in usage:
        completion.prompt_tokens = (
            usage["input_tokens"]
            + usage.get("cache_creation_input_tokens", 0)
            + usage.get("cache_read_input_tokens", 0)
        )
    completion.completion_tokens = usage.get("output_tokens")
    completion.cached_tokens = usage.get("cache_read_input_tokens")
    completion.reasoning_tokens = usage.get("thinking_tokens")


class _Block:
    __slots__ = ("arguments", "id", "kind", "name", "start_input", "texts")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.texts: list[str] = []
        self.arguments: list[str] = []
        self.id: str | None = None
        self.name: str | None = None
        self.start_input: object = None


class AnthropicStreamAssembler(EventStreamAssembler):
    """Reassembles a Messages API stream (see the module docstring)."""

    terminal = "message_stop"

    def __init__(self) -> None:
        super().__init__()
        self._blocks: dict[int, _Block] = {}
        self._usage: dict[str, int] = {}
        self._stop_reason: str | None = None
        self._model: str | None = None

    def _read_json(self, body: bytes, status: int) -> Completion:
        return completion_from_json(body, status)

    def _apply(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "content_block_delta":
            self._delta(self._index(payload), payload.get("delta"))
        elif kind == "content_block_start":
            self._start(self._index(payload), payload.get("content_block"))
        elif kind == "message_start":
            message = payload.get("message")
            if not isinstance(message, dict):
                raise BadShape("message_start has no message")
            model = message.get("model")
            self._model = model if isinstance(model, str) and model else None
            _merge_usage(self._usage, message.get("usage"))
        elif kind == "message_delta":
            delta = payload.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(reason, str):
                self._stop_reason = reason
            _merge_usage(self._usage, payload.get("usage"))
        elif kind == "message_stop":
            self._done = True
        elif kind == "error":
            self._fail(error_message(payload) or "error event")

    @staticmethod
    def _index(payload: dict[str, Any]) -> int:
        index = int_or_none(payload.get("index"))
        if index is None or index < 0:
            raise BadShape("a content block event without an index")
        return index

    def _start(self, index: int, block: object) -> None:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadShape("content_block_start has no content_block")
        started = self._blocks[index] = _Block(block["type"])
        if started.kind == "text":
            started.texts.append(_text(block.get("text", ""), "content_block.text"))
            self._token_seen = self._token_seen or bool(started.texts[0])
        elif started.kind == "tool_use":
            call = _tool_call(block, None, "content_block")  # checks the name
            started.id, started.name = call.id, call.name
            started.start_input = block.get("input")
            self._token_seen = True

    def _delta(self, index: int, delta: object) -> None:
        if not isinstance(delta, dict):
            raise BadShape("content_block_delta has no delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = _text(delta.get("text"), "text_delta.text")
            self._blocks.setdefault(index, _Block("text")).texts.append(text)
            self._token_seen = self._token_seen or bool(text)
        elif kind == "input_json_delta":
            block = self._blocks.get(index)
            if block is None or block.kind != "tool_use":
                raise BadShape("input_json_delta outside a tool_use block")
            block.arguments.append(_text(delta.get("partial_json"), "partial_json"))
        # thinking_delta, signature_delta, citations_delta: not part of the answer's text

    def _assemble(self) -> Completion:
        completion = self._completion
        texts: list[str] = []
        completion.tool_calls = []
        for _, block in sorted(self._blocks.items()):
            if block.kind == "text":
                texts += block.texts
            elif block.kind == "tool_use":
                arguments = "".join(block.arguments)
                if not block.arguments:
                    try:
                        arguments = _input_text(block.start_input, "content_block")
                    except BadShape as exc:
                        self._note_invalid(str(exc))
                completion.tool_calls.append(
                    ToolCall(name=block.name or "", arguments=arguments, id=block.id)
                )
        completion.text = "".join(texts) if texts or not completion.tool_calls else None
        if self._stop_reason is not None:
            completion.finish_reason = finish_reason(ANTHROPIC_MESSAGES, self._stop_reason)
        _apply_usage(completion, self._usage)
        completion.response_model = self._model
        return completion
