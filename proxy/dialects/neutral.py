"""The neutral request: one LLM question, whichever API it was asked in.

A dialect's `parse` reads its wire JSON into a `NeutralRequest`; another dialect's `render` writes
it back out. A translation is exactly that pair, so every dialect pair goes through this one
model instead of a converter per pair.

Two rules keep a translation honest:

* What changes the question but has no neutral form (`n > 1`, logprobs, audio, a provider's own
  tools, a field we do not know) is listed in `unportable` by `parse`; `render` refuses such a
  request with `Untranslatable`. What does not change the question (metadata, `store`, cache
  hints, the model's hidden reasoning from earlier turns) is listed in `dropped`.
* Neutral values are normalized so that equal questions compare equal: a dialect's defaults are
  spelled as `None` (`tool_choice="auto"`, `parallel_tool_calls=True`, image detail "auto"),
  an empty text is no part at all, and a function without parameters has the empty object schema.

Example:
    request = NeutralRequest(
        dialect="openai-chat",
        system=["Be brief."],
        messages=[Message("user", [Text("Weather in Oslo?")])],
        tools=[FunctionTool("get_weather", parameters={"type": "object", "properties": {}})],
        max_output_tokens=256,
    )
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class Untranslatable(ValueError):
    """The request cannot be asked faithfully in the target dialect; `reason` says why.

    The reason is stored with the skipped shadow and may be logged, so it names fields and
    dialects only, never request content.

    Example:
        try:
            body = render(parse(request_json), model="claude-sonnet-4-5")
        except Untranslatable as error:
            skip(reason=error.reason)  # e.g. "n=2 has no faithful translation"
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image by reference: an http(s) URL or a `data:<media type>;base64,...` URL."""

    url: str
    detail: str | None = None  # "low" or "high"; None is the provider's default ("auto")


Part = Text | Image


@dataclass(frozen=True, slots=True)
class ToolUse:
    """A function call the assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: str  # JSON text of an object


@dataclass(slots=True)
class Message:
    """One turn. `system` turns here are mid-conversation ones (leading ones are
    `NeutralRequest.system`); a `tool` turn is one function's result for `tool_call_id`."""

    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolUse] = field(default_factory=list)  # assistant turns only
    tool_call_id: str | None = None  # tool turns only
    is_error: bool = False  # tool turns only: the result reports that the call failed

    def text(self) -> str:
        return "".join(part.text for part in self.content if isinstance(part, Text))


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    strict: bool = False  # resolved at parse: Responses tools are strict unless told otherwise


@dataclass(frozen=True, slots=True)
class ForcedTool:
    """`tool_choice` that names the one function the model must call."""

    name: str


ChoiceWord = Literal["none", "required"]
ToolChoice = ChoiceWord | ForcedTool  # None (unset) means "auto"


SCHEMA_NAME = "response"  # OpenAI requires a name for an output schema; Anthropic has none


@dataclass(frozen=True, slots=True)
class JsonSchemaFormat:
    """Structured output: the answer is JSON valid against `schema`."""

    schema: dict[str, Any]
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class JsonObjectFormat:
    """JSON mode: the answer is some JSON object, no schema."""


ResponseFormat = JsonSchemaFormat | JsonObjectFormat


@dataclass(slots=True)
class NeutralRequest:
    dialect: str  # the dialect it was parsed from
    model: str | None = None
    system: list[str] = field(default_factory=list)  # leading instructions, one per block
    messages: list[Message] = field(default_factory=list)
    tools: list[FunctionTool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None  # only False is ever set: True is every default
    response_format: ResponseFormat | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    reasoning_effort: str | None = None  # OpenAI's knob for reasoning models
    verbosity: str | None = None  # OpenAI's knob for answer length
    unportable: list[str] = field(default_factory=list)  # reasons: translation must refuse
    dropped: list[str] = field(default_factory=list)  # fields left out: they ask nothing

    def settle(self) -> NeutralRequest:
        """Write the question one way, so that equal questions compare equal (every parser
        ends with this): an assistant turn's text is one part, the model wrote it as one;
        calls that follow an assistant turn belong to that turn; with tool use off
        (`tool_choice="none"`) whether calls may run in parallel means nothing."""
        if self.tool_choice == "none":
            self.parallel_tool_calls = None
        settled: list[Message] = []
        for message in self.messages:
            texts_only = all(isinstance(part, Text) for part in message.content)
            if message.role == "assistant" and len(message.content) > 1 and texts_only:
                message.content = [Text(message.text())]
            previous = settled[-1] if settled else None
            joins = previous is not None and previous.role == message.role == "assistant"
            if previous is not None and joins and not message.content:
                previous.tool_calls = previous.tool_calls + message.tool_calls
                continue
            settled.append(message)
        self.messages = settled
        return self

    def refuse_unportable(self) -> None:
        """Raise `Untranslatable` naming the first feature without a faithful translation."""
        if self.unportable:
            raise Untranslatable(self.unportable[0])


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What a renderer needs beyond the request; one per target (phase-2 config per candidate).

    `default_max_tokens` is sent to a dialect that requires a cap (Anthropic) when the request
    set none; a too-small value shows up as `finish_reason="length"`, never silently.
    `chat_max_tokens_field` is the cap's name for openai-chat targets: OpenAI's reasoning models
    take only `max_completion_tokens`, some OpenAI-compatible servers only `max_tokens`.
    """

    default_max_tokens: int = 8192
    chat_max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"


DEFAULT_OPTIONS = RenderOptions()
