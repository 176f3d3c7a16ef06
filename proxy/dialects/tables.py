"""What the dialects call the same things, and what each one can say: the translation tables.

Parsers and renderers read these tables instead of branching on dialect names, so a new field
or a new dialect is a table row. Four kinds of rows:

* names: roles, tool-choice words, stop reasons, the field that caps output tokens;
* field policy: which top-level fields a parser reads, which it may leave out because they do
  not change the question (`DROPPED`), and which values are the API's own default (`NO_OP`);
  any other field is *unportable* (a translation refuses it, never guesses);
* limits: value ranges a target accepts (Anthropic's temperature stops at 1);
* capabilities: neutral features only some dialects can express (`FEATURES`).

The finish-reason vocabulary every `Completion` uses (OpenAI chat's words):

    stop            the model ended its turn (or hit one of the request's stop sequences)
    length          the output-token cap or the context window cut the answer
    tool_calls      the model stopped to call functions
    content_filter  the provider's safety system stopped or withheld the answer (Anthropic's
                    `refusal` stop reason, Responses' `content_filter` incomplete reason). A
                    model that refuses in words is `stop`, with the words as text.

A provider's value outside these tables is kept as the provider sent it, so nothing is hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from shadowtap.dialects.neutral import (
    ChoiceWord,
    Image,
    JsonObjectFormat,
    JsonSchemaFormat,
    NeutralRequest,
    Role,
    Untranslatable,
)
from shadowtap.dialects.wire import unportable_field

OPENAI_CHAT: Final = "openai-chat"
OPENAI_RESPONSES: Final = "openai-responses"
ANTHROPIC_MESSAGES: Final = "anthropic-messages"
OPENAI_EMBEDDINGS: Final = "openai-embeddings"
CONVERSATION_DIALECTS: Final = (OPENAI_CHAT, OPENAI_RESPONSES, ANTHROPIC_MESSAGES)

# The standard path of each dialect; a route's dialect is found from its path.
PATHS: Final[Mapping[str, str]] = {
    OPENAI_CHAT: "/v1/chat/completions",
    OPENAI_RESPONSES: "/v1/responses",
    ANTHROPIC_MESSAGES: "/v1/messages",
    OPENAI_EMBEDDINGS: "/v1/embeddings",
}
DIALECT_OF_PATH: Final[Mapping[str, str]] = {path: name for name, path in PATHS.items()}

# -- names --------------------------------------------------------------------------------------
ROLES_IN: Final[Mapping[str, Mapping[str, Role]]] = {
    OPENAI_CHAT: {
        "system": "system",
        "developer": "system",
        "user": "user",
        "assistant": "assistant",
        "tool": "tool",
    },
    OPENAI_RESPONSES: {
        "system": "system",
        "developer": "system",
        "user": "user",
        "assistant": "assistant",
    },
    ANTHROPIC_MESSAGES: {"system": "system", "user": "user", "assistant": "assistant"},
}

# Tool choice in words; "auto" is every dialect's default and is neutral `None`.
TOOL_CHOICE_IN: Final[Mapping[str, Mapping[str, ChoiceWord | None]]] = {
    OPENAI_CHAT: {"auto": None, "none": "none", "required": "required"},
    OPENAI_RESPONSES: {"auto": None, "none": "none", "required": "required"},
    ANTHROPIC_MESSAGES: {"auto": None, "none": "none", "any": "required"},
}
TOOL_CHOICE_OUT: Final[Mapping[str, Mapping[ChoiceWord, str]]] = {
    dialect: {neutral: word for word, neutral in words.items() if neutral is not None}
    for dialect, words in TOOL_CHOICE_IN.items()
}

# Whether a function tool is strict when the request does not say.
STRICT_TOOLS_BY_DEFAULT: Final[Mapping[str, bool]] = {
    OPENAI_CHAT: False,
    OPENAI_RESPONSES: True,
    ANTHROPIC_MESSAGES: False,
}

# The field that caps output tokens (chat's legacy `max_tokens` is read as an alias).
MAX_TOKENS_FIELD: Final[Mapping[str, str]] = {
    OPENAI_CHAT: "max_completion_tokens",
    OPENAI_RESPONSES: "max_output_tokens",
    ANTHROPIC_MESSAGES: "max_tokens",
}

FINISH_REASONS: Final[Mapping[str, Mapping[str, str]]] = {
    ANTHROPIC_MESSAGES: {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
    },
    # Responses has no stop reason: a completed response "stops" (or calls tools), an
    # incomplete one says why in `incomplete_details.reason`.
    OPENAI_RESPONSES: {
        "max_output_tokens": "length",
        "max_messages": "length",
        "content_filter": "content_filter",
    },
}


def finish_reason(dialect: str, provider_value: str) -> str:
    """The shared word for a provider's stop reason; unknown values are kept as sent.

    Example: `finish_reason("anthropic-messages", "tool_use") == "tool_calls"`
    """
    return FINISH_REASONS.get(dialect, {}).get(provider_value, provider_value)


# -- field policy -------------------------------------------------------------------------------
# Top-level fields each parser reads into the neutral model.
READ: Final[Mapping[str, frozenset[str]]] = {
    OPENAI_CHAT: frozenset(
        {
            "model", "messages", "tools", "tool_choice", "parallel_tool_calls",
            "response_format", "max_completion_tokens", "max_tokens", "temperature", "top_p",
            "stop", "stream", "reasoning_effort", "verbosity",
        }
    ),
    OPENAI_RESPONSES: frozenset(
        {
            "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
            "text", "max_output_tokens", "temperature", "top_p", "stream", "reasoning",
            "include",
        }
    ),
    ANTHROPIC_MESSAGES: frozenset(
        {
            "model", "messages", "system", "tools", "tool_choice", "max_tokens", "temperature",
            "top_p", "stop_sequences", "stream", "output_config",
        }
    ),
}  # fmt: skip

# Fields that do not change the question: who asked, what to store or cache, how to bill,
# how to deliver the stream.
DROPPED: Final[Mapping[str, frozenset[str]]] = {
    OPENAI_CHAT: frozenset(
        {
            "user", "metadata", "store", "service_tier", "stream_options", "safety_identifier",
            "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
        }
    ),
    OPENAI_RESPONSES: frozenset(
        {
            "user", "metadata", "store", "service_tier", "stream_options", "safety_identifier",
            "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "truncation",
        }
    ),
    ANTHROPIC_MESSAGES: frozenset(
        {"metadata", "service_tier", "cache_control", "inference_geo"}
    ),
}  # fmt: skip

# Values that ask for the API's default behaviour, so leaving the field out changes nothing.
NO_OP: Final[Mapping[str, Mapping[str, object]]] = {
    OPENAI_CHAT: {
        "n": 1,
        "logprobs": False,
        "top_logprobs": 0,
        "frequency_penalty": 0,
        "presence_penalty": 0,
        "modalities": ["text"],
    },
    OPENAI_RESPONSES: {"background": False, "top_logprobs": 0},
    ANTHROPIC_MESSAGES: {"thinking": {"type": "disabled"}},
}


def sort_fields(body: Mapping[str, Any], dialect: str, request: NeutralRequest) -> None:
    """Note each top-level field the parser does not read as dropped or unportable."""
    read, dropped, no_op = READ[dialect], DROPPED[dialect], NO_OP[dialect]
    for name, value in body.items():
        if name in read:
            continue
        if name in dropped or value is None or (name in no_op and no_op[name] == value):
            request.dropped.append(name)
        else:
            request.unportable.append(unportable_field("field ", name))


# -- limits -------------------------------------------------------------------------------------
TEMPERATURE_MAX: Final[Mapping[str, float]] = {
    OPENAI_CHAT: 2.0,
    OPENAI_RESPONSES: 2.0,
    ANTHROPIC_MESSAGES: 1.0,
}
STOP_SEQUENCES_MAX: Final[Mapping[str, int]] = {OPENAI_CHAT: 4, ANTHROPIC_MESSAGES: 10_000}
ANTHROPIC_IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


# -- capabilities -------------------------------------------------------------------------------
def _images(request: NeutralRequest, roles: tuple[str, ...]) -> list[Image]:
    return [
        part
        for message in request.messages
        if message.role in roles
        for part in message.content
        if isinstance(part, Image)
    ]


def _schema_description(request: NeutralRequest) -> bool:
    fmt = request.response_format
    return isinstance(fmt, JsonSchemaFormat) and fmt.description is not None


# (what the request uses, how to tell, the dialects that can express it)
FEATURES: Final[list[tuple[str, Callable[[NeutralRequest], bool], frozenset[str]]]] = [
    (
        "stop sequences",
        lambda r: bool(r.stop),
        frozenset({OPENAI_CHAT, ANTHROPIC_MESSAGES}),
    ),
    (
        "JSON mode without a schema",
        lambda r: isinstance(r.response_format, JsonObjectFormat),
        frozenset({OPENAI_CHAT, OPENAI_RESPONSES}),
    ),
    (
        "a description of the output schema",
        _schema_description,
        frozenset({OPENAI_CHAT, OPENAI_RESPONSES}),
    ),
    (
        "a system message after the conversation started",
        lambda r: any(m.role == "system" for m in r.messages),
        frozenset({OPENAI_CHAT, OPENAI_RESPONSES}),
    ),
    (
        "an image detail level",
        lambda r: any(i.detail is not None for i in _images(r, ("user", "tool", "system"))),
        frozenset({OPENAI_CHAT, OPENAI_RESPONSES}),
    ),
    (
        "images in a tool result",
        lambda r: bool(_images(r, ("tool",))),
        frozenset({OPENAI_RESPONSES, ANTHROPIC_MESSAGES}),
    ),
    (
        "images in a system message",
        lambda r: bool(_images(r, ("system",))),
        frozenset({OPENAI_RESPONSES}),
    ),
    (
        "a tool result flagged as an error",
        lambda r: any(m.is_error for m in r.messages),
        frozenset({ANTHROPIC_MESSAGES}),
    ),
    (
        "reasoning_effort",
        lambda r: r.reasoning_effort is not None,
        frozenset({OPENAI_CHAT, OPENAI_RESPONSES}),
    ),
    (
        "verbosity",
        lambda r: r.verbosity is not None,
        frozenset({OPENAI_CHAT, OPENAI_RESPONSES}),
    ),
]

# A conversation that ends with an assistant turn: Anthropic continues that turn (prefill),
# OpenAI answers after it. The same body asks different things, so it only crosses between
# dialects that read it the same way.
TRAILING_ASSISTANT: Final[Mapping[str, str]] = {
    OPENAI_CHAT: "answers after it",
    OPENAI_RESPONSES: "answers after it",
    ANTHROPIC_MESSAGES: "continues it",
}


def ensure_expressible(request: NeutralRequest, target: str) -> None:
    """Raise `Untranslatable` unless `target` can ask exactly what `request` asks.

    Example: a chat request with `stop` cannot be rendered for the Responses API:
        ensure_expressible(parse_chat({"messages": [...], "stop": ["END"]}), "openai-responses")
        # Untranslatable: stop sequences: no equivalent in openai-responses
    """
    request.refuse_unportable()
    for feature, used, dialects in FEATURES:
        if target not in dialects and used(request):
            raise Untranslatable(f"{feature}: no equivalent in {target}")
    last = request.messages[-1] if request.messages else None
    if last is not None and last.role == "assistant":
        source_reads, target_reads = TRAILING_ASSISTANT[request.dialect], TRAILING_ASSISTANT[target]
        if source_reads != target_reads:
            raise Untranslatable(
                f"a conversation ending with an assistant turn: {request.dialect} "
                f"{source_reads}, {target} {target_reads}"
            )
    if request.temperature is not None and request.temperature > TEMPERATURE_MAX[target]:
        raise Untranslatable(
            f"temperature {request.temperature:g} is above {target}'s maximum "
            f"{TEMPERATURE_MAX[target]:g}"
        )
    if len(request.stop) > STOP_SEQUENCES_MAX.get(target, 0):
        raise Untranslatable(f"{len(request.stop)} stop sequences are more than {target} takes")


# -- headers ------------------------------------------------------------------------------------
ANTHROPIC_VERSION: Final = "2023-06-01"
# Headers a target of the dialect needs whoever calls it, and how it takes an API key.
REQUIRED_HEADERS: Final[Mapping[str, Mapping[str, str]]] = {
    ANTHROPIC_MESSAGES: {"anthropic-version": ANTHROPIC_VERSION},
}
AUTH_HEADER: Final[Mapping[str, tuple[str, str]]] = {
    OPENAI_CHAT: ("Authorization", "Bearer {key}"),
    OPENAI_RESPONSES: ("Authorization", "Bearer {key}"),
    OPENAI_EMBEDDINGS: ("Authorization", "Bearer {key}"),
    ANTHROPIC_MESSAGES: ("x-api-key", "{key}"),
}
# Client headers that change what a request asks: they mean something to one provider only,
# so a request carrying one is not translated to another dialect.
QUESTION_HEADERS: Final[Mapping[str, frozenset[str]]] = {
    ANTHROPIC_MESSAGES: frozenset({"anthropic-beta"}),
}


def target_headers(dialect: str, api_key: str | None) -> dict[str, str]:
    """The headers a shadow target speaking `dialect` needs, its API key in that dialect's way.

    Example: `target_headers("anthropic-messages", "sk-ant-1")`
        == {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-1"}
    """
    headers = dict(REQUIRED_HEADERS.get(dialect, {}))
    if api_key:
        name, template = AUTH_HEADER[dialect]
        headers[name] = template.format(key=api_key)
    return headers
