"""Read an `openai-chat` answer (a chat completion, or its SSE chunks) into a `Completion`.

Only the first choice (`index` 0) is kept, because a `Completion` is one answer; `n > 1`
requests are compared on their first choice. A structured-outputs refusal (`message.refusal`,
content null) becomes `text`: it is what the model said, and the refusal scorer must see it.
Legacy `/v1/completions` answers (`choices[].text`) and the pre-tools `function_call` are read
too, as OpenAI-compatible servers still send them.

Streams are untyped `chat.completion.chunk` events ending with the `[DONE]` sentinel; usage
may come in any chunk (the last value wins), an `{"error": ...}` chunk or an `error` event is
the stream's error.

Example:
    assembler = ChatStreamAssembler()
    for chunk in chunks:
        if assembler.feed(chunk):
            ttft = now() - started   # the chunk that carried the first token
    completion = assembler.finish(status=200)
"""

from __future__ import annotations

from typing import Any

import orjson
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


def completion_from_json(body: bytes, status: int, values: int | None = None) -> Completion:
    """A whole (non-streamed) chat-completions or legacy completions body. `values` is a
    `json_values_bound` of `body` when the caller counted it already (a slice at a time)."""
    completion, payload = load_json(body, status, values)
    if payload is None:
        return completion
    try:
        _fill_from_json(completion, payload)
    except BadShape as exc:
        completion.error = f"invalid response body: {exc}"
    return completion


def _fill_from_json(completion: Completion, payload: object) -> None:
    if not isinstance(payload, dict):
        raise BadShape("not a JSON object")
    message = error_message(payload)
    if message is not None:  # some servers answer 200 with an error body
        completion.error = message
        return
    choice = _first_choice(payload.get("choices"))
    if choice is None:
        raise BadShape("no choices")
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
        raise BadShape("choices[0] has neither message nor text")
    reason = choice.get("finish_reason")
    completion.finish_reason = reason if isinstance(reason, str) else None
    _apply_usage_and_model(completion, payload)


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
    raise BadShape("content is neither a string nor a list of parts")


def _arguments(value: object) -> str:
    # Some OpenAI-compatible servers (e.g. Ollama) send arguments as an object, not a string.
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


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
        raise BadShape("tool_calls is not a list")
    for i, call in enumerate(raw or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadShape(f"tool_calls[{i}] has no function name")
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
        prompt = int_or_none(usage.get("prompt_tokens"))
        generated = int_or_none(usage.get("completion_tokens"))
        if prompt is not None:
            completion.prompt_tokens = prompt
        if generated is not None:
            completion.completion_tokens = generated
    model = payload.get("model")
    if completion.response_model is None and isinstance(model, str) and model:
        completion.response_model = model


class ChatStreamAssembler(EventStreamAssembler):
    """Reassembles a chat-completions SSE stream (see the module docstring)."""

    terminal = "[DONE]"
    sentinel = b"[DONE]"
    typed = False  # chunks carry no `type`; an `error` event is named by the SSE event line

    def __init__(self) -> None:
        super().__init__()
        self._text: list[str] | None = None  # None until a content delta appears
        self._refusal: list[str] = []
        self._calls: dict[int, PartialCall] = {}

    def _read_json(self, body: bytes, status: int) -> Completion:
        return completion_from_json(body, status)

    def _apply(self, kind: str, payload: dict[str, Any]) -> None:
        message = error_message(payload)
        if message is None and kind == "error":
            message = short(orjson.dumps(payload))
        if message is not None:
            self._fail(message)
            return
        _apply_usage_and_model(self._completion, payload)
        choices = payload.get("choices")
        if not isinstance(choices, list):
            if choices is not None:
                raise BadShape("choices is not a list")
            return
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                try:
                    self._apply_choice(choice)
                except BadShape as exc:
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
                self._merge_fragment(self._calls.setdefault(-1, PartialCall()), legacy, None)
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
            raise BadShape("delta.tool_calls is not a list")
        for fragment in fragments:
            if not isinstance(fragment, dict):
                raise BadShape("a tool-call delta is not an object")
            index = int_or_none(fragment.get("index"))
            if index is None:
                # Servers that omit `index` send whole calls: a new id starts a new call.
                last = max(self._calls, default=-1)
                is_new = last < 0 or fragment.get("id") is not None
                index = last + 1 if is_new else last
            function = fragment.get("function")
            call = self._calls.setdefault(index, PartialCall())
            self._merge_fragment(call, function if isinstance(function, dict) else {}, fragment)
            self._token_seen = True

    @staticmethod
    def _merge_fragment(
        call: PartialCall, function: dict[str, Any], fragment: dict[str, Any] | None
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

    def _assemble(self) -> Completion:
        completion = self._completion
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
        return completion
