"""Every dialect in one table: its path, how to parse and render its requests, how to read its
answers. The request path asks this module, never a dialect by name.

Example (what the shadow path does for a candidate speaking another dialect):
    source = dialect_for_path("/v1/chat/completions")          # "openai-chat"
    body = translate(request_json, source, "anthropic-messages", "claude-sonnet-4-5")  # bytes
    reader = DIALECTS["anthropic-messages"]
    assembler = reader.assembler()                              # for a text/event-stream answer
    completion = reader.completion_from_json(raw, status)       # for a JSON answer
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from shadowtap.completion import Completion
from shadowtap.dialects import (
    anthropic_answer,
    anthropic_messages,
    embeddings,
    openai_chat,
    openai_chat_answer,
    openai_responses,
    responses_answer,
)
from shadowtap.dialects.neutral import (
    DEFAULT_OPTIONS,
    NeutralRequest,
    RenderOptions,
    Untranslatable,
)
from shadowtap.dialects.tables import (
    ANTHROPIC_MESSAGES,
    DIALECT_OF_PATH,
    OPENAI_CHAT,
    OPENAI_EMBEDDINGS,
    OPENAI_RESPONSES,
    PATHS,
    QUESTION_HEADERS,
)


class Assembler(Protocol):
    """Reads one streamed answer fed in network chunks of any size."""

    def feed(self, chunk: bytes) -> bool:
        """Consume a chunk; True exactly once, for the chunk that carried the first token."""
        ...

    def finish(self, status: int) -> Completion:
        """What was assembled, with `error` set when the stream ended early or was invalid."""
        ...


Parse = Callable[[dict[str, Any]], NeutralRequest]
Render = Callable[[NeutralRequest, str | None, RenderOptions], dict[str, Any]]


class ReadJson(Protocol):
    def __call__(self, body: bytes, status: int, values: int | None = None) -> Completion:
        """A whole answer; `values`: a `json_values_bound` of `body` if the caller has one."""
        ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    path: str
    completion_from_json: ReadJson
    assembler: Callable[[], Assembler]
    parse: Parse | None = None  # None: requests are not translated (embeddings)
    render: Render | None = None
    # An answer's final parse may take long (a 16.9 MB base64 embeddings answer: 0.4-0.6 s):
    # the proxy runs it in a thread instead of on the event loop.
    off_loop: bool = False


DIALECTS: Mapping[str, Dialect] = {
    OPENAI_CHAT: Dialect(
        OPENAI_CHAT,
        PATHS[OPENAI_CHAT],
        openai_chat_answer.completion_from_json,
        openai_chat_answer.ChatStreamAssembler,
        openai_chat.parse,
        openai_chat.render,
    ),
    ANTHROPIC_MESSAGES: Dialect(
        ANTHROPIC_MESSAGES,
        PATHS[ANTHROPIC_MESSAGES],
        anthropic_answer.completion_from_json,
        anthropic_answer.AnthropicStreamAssembler,
        anthropic_messages.parse,
        anthropic_messages.render,
    ),
    OPENAI_RESPONSES: Dialect(
        OPENAI_RESPONSES,
        PATHS[OPENAI_RESPONSES],
        responses_answer.completion_from_json,
        responses_answer.ResponsesStreamAssembler,
        openai_responses.parse,
        openai_responses.render,
    ),
    # Embeddings requests are not translated (see embeddings.render for another model).
    OPENAI_EMBEDDINGS: Dialect(
        OPENAI_EMBEDDINGS,
        PATHS[OPENAI_EMBEDDINGS],
        embeddings.completion_from_json,
        embeddings.EmbeddingsAssembler,
        off_loop=True,
    ),
}


def dialect_for_path(path: str, overrides: Mapping[str, str] | None = None) -> str | None:
    """The dialect of a route: configured overrides first, then the standard paths.

    Example: `dialect_for_path("/v1/messages") == "anthropic-messages"`;
    `dialect_for_path("/llm/chat", {"/llm/chat": "openai-chat"}) == "openai-chat"`.
    """
    if overrides and path in overrides:
        return overrides[path]
    return DIALECT_OF_PATH.get(path)


def translate(
    request_json: dict[str, Any],
    source: str,
    target: str,
    model: str | None,
    options: RenderOptions = DEFAULT_OPTIONS,
    header_names: Iterable[str] = (),
) -> bytes:
    """The request body `target` should get, encoded: parsed in `source`, rendered in `target`.

    For the same dialect on both sides keep sending the client's own bytes (with only `model`
    replaced, as `ShadowBodies.for_model` does); called anyway, this returns that body
    re-encoded. `header_names` are the client's header names; one that changes the question
    for `source` only (`anthropic-beta`) makes a cross-dialect translation refuse.

    Raises `Untranslatable(reason)` when the request cannot be asked faithfully in `target`,
    including a body nested too deep to encode again.

    Example:
        translate({"model": "gpt-4o", "messages": [...], "n": 2}, "openai-chat",
                  "anthropic-messages", "claude-sonnet-4-5")
        # Untranslatable: field 'n' has no faithful translation
    """
    if source == target:
        body = request_json if model is None else {**request_json, "model": model}
    else:
        parse, render = DIALECTS[source].parse, DIALECTS[target].render
        if parse is None or render is None:
            raise Untranslatable(f"{source} requests are not translated to {target}")
        carried = QUESTION_HEADERS.get(source, frozenset())
        for name in header_names:
            if name.lower() in carried:
                raise Untranslatable(f"header {name.lower()}: no equivalent in {target}")
        body = render(parse(request_json), model, options)
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:  # nested past orjson's depth limit (a hostile schema)
        raise Untranslatable("the request is nested too deeply to encode") from None
