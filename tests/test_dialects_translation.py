"""Translation between dialects through the neutral model: the same conversation written in
every dialect is the same question, and a translation either asks exactly that question or
refuses with a reason — never a silently different one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shadowtap.dialects import DIALECTS, RenderOptions, Untranslatable, translate
from shadowtap.dialects.neutral import (
    SCHEMA_NAME,
    ForcedTool,
    FunctionTool,
    Image,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NeutralRequest,
    Text,
    ToolUse,
)

from tests.examples import examples

REQUESTS = Path(__file__).parent / "fixtures" / "dialects" / "requests"
TRANSLATED = sorted(name for name, dialect in DIALECTS.items() if dialect.render is not None)
CAP = RenderOptions().default_max_tokens
CHAT, ANTHROPIC = "openai-chat", "anthropic-messages"


def load(dialect: str) -> dict[str, Any]:
    return json.loads((REQUESTS / f"weather-agent.{dialect}.json").read_text(encoding="utf-8"))


def question(request: NeutralRequest) -> NeutralRequest:
    """What is asked, without where it came from or what was left out as meaningless."""
    return replace(request, dialect="", model=None, dropped=[])


def parse(dialect: str, body: dict[str, Any]) -> NeutralRequest:
    parser = DIALECTS[dialect].parse
    assert parser is not None
    return parser(body)


def render(dialect: str, request: NeutralRequest, model: str | None = None) -> dict[str, Any]:
    renderer = DIALECTS[dialect].render
    assert renderer is not None
    return renderer(request, model, RenderOptions())


@pytest.mark.parametrize("dialect", TRANSLATED)
def test_the_same_conversation_in_every_dialect_is_the_same_question(dialect: str) -> None:
    assert question(parse(dialect, load(dialect))) == question(
        parse("openai-chat", load("openai-chat"))
    )


@pytest.mark.parametrize("source", TRANSLATED)
@pytest.mark.parametrize("target", TRANSLATED)
def test_a_translation_writes_what_a_native_client_would(source: str, target: str) -> None:
    model = load(target)["model"]
    translated = orjson.loads(translate(load(source), source, target, model))
    assert translated == load(target)


CHAT_WITH_EVERYTHING = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You plan trips."},
        {"role": "user", "content": "Book me a train to Lyon tomorrow morning."},
        {
            "role": "assistant",
            "content": "Searching trains.",
            "tool_calls": [{"id": "call_9", "type": "function",
                            "function": {"name": "search_trains", "arguments": '{"to":"Lyon"}'}}],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "07:04, 08:04"},
        {"role": "user", "content": "The first one."},
    ],
    "tools": [{"type": "function", "function": {
        "name": "search_trains", "description": "Trains by destination.", "strict": True,
        "parameters": {"type": "object", "properties": {"to": {"type": "string"}},
                       "required": ["to"], "additionalProperties": False}}}],
    "tool_choice": "required",
    "max_completion_tokens": 300,
    "stop": ["\n\n"],
    "temperature": 0.7,
    "top_p": 0.95,
}  # fmt: skip


def test_chat_to_anthropic_and_back_keeps_the_question() -> None:
    there = orjson.loads(translate(CHAT_WITH_EVERYTHING, "openai-chat", "anthropic-messages", "c"))
    assert there["system"] == "You plan trips."
    assert there["messages"][1]["content"] == [
        {"type": "text", "text": "Searching trains."},
        {"type": "tool_use", "id": "call_9", "name": "search_trains", "input": {"to": "Lyon"}},
    ]
    assert there["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_9", "content": "07:04, 08:04"},
            {"type": "text", "text": "The first one."},
        ],
    }
    assert there["tool_choice"] == {"type": "any"}
    assert (there["max_tokens"], there["stop_sequences"], there["temperature"]) == (
        300,
        ["\n\n"],
        0.7,
    )
    back = orjson.loads(translate(there, "anthropic-messages", "openai-chat", "gpt-4o"))
    assert back == CHAT_WITH_EVERYTHING


@pytest.mark.parametrize(
    ("body", "source", "target", "reason"),
    [
        ({**CHAT_WITH_EVERYTHING, "n": 2}, CHAT, ANTHROPIC, "field 'n'"),
        ({**CHAT_WITH_EVERYTHING, "logprobs": True}, CHAT, ANTHROPIC, "logprobs"),
        ({**CHAT_WITH_EVERYTHING, "temperature": 1.6}, CHAT, ANTHROPIC, "temperature"),
        ({**CHAT_WITH_EVERYTHING, "response_format": {"type": "json_object"}}, "openai-chat",
         "anthropic-messages", "JSON mode"),
        ({**load("anthropic-messages"), "top_k": 5}, "anthropic-messages", "openai-chat", "top_k"),
        ({**load("anthropic-messages"),
          "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]},
         "anthropic-messages", "openai-chat", "ending with an assistant turn"),
    ],
)  # fmt: skip
def test_translate_refuses_with_a_reason(
    body: dict[str, Any], source: str, target: str, reason: str
) -> None:
    with pytest.raises(Untranslatable) as refused:
        translate(body, source, target, "m")
    assert reason in refused.value.reason


def test_a_provider_beta_header_is_not_translated() -> None:
    body = load("anthropic-messages")
    with pytest.raises(Untranslatable, match="anthropic-beta"):
        translate(body, "anthropic-messages", "openai-chat", "m", header_names=["Anthropic-Beta"])
    assert translate(body, "anthropic-messages", "openai-chat", "m", header_names=["X-Trace"])
    # The same dialect is no translation: the header travels with the request as before.
    assert translate(body, "anthropic-messages", "anthropic-messages", "m", ["anthropic-beta"])


# -- any question, any dialect pair -------------------------------------------------------------
_text = st.text(min_size=1, max_size=12).map(Text)
_id = st.from_regex(r"call_[a-z0-9]{1,6}", fullmatch=True)
_arguments = st.dictionaries(
    st.sampled_from(["city", "n", "when"]), st.integers(-9, 9) | st.text(max_size=4), max_size=3
).map(lambda args: orjson.dumps(args).decode())
_image = st.builds(
    Image,
    st.sampled_from(["https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo="]),
    st.sampled_from([None, None, "low"]),
)
_user = st.lists(_text | _image, min_size=1, max_size=3).map(lambda p: Message("user", p))
_assistant = st.builds(
    lambda parts, calls: Message("assistant", parts, calls),
    st.lists(_text, max_size=2),
    st.lists(st.builds(ToolUse, _id, st.sampled_from(["lookup", "book"]), _arguments), max_size=2),
).filter(lambda m: bool(m.content or m.tool_calls))
_tool = st.builds(
    lambda parts, call_id, failed: Message("tool", parts, tool_call_id=call_id, is_error=failed),
    st.lists(_text | _image, max_size=2),
    _id,
    st.sampled_from([False, False, False, True]),
)
_system_turn = st.lists(_text, min_size=1, max_size=1).map(lambda p: Message("system", p))
_schema = st.sampled_from(
    [
        {"type": "object", "properties": {}},
        {"type": "object", "properties": {"to": {"type": "string"}}},
    ]
)
_tools = st.lists(
    st.builds(
        FunctionTool,
        st.sampled_from(["lookup", "book", "cancel"]),
        st.none() | st.text(min_size=1, max_size=10),
        _schema,
        st.booleans(),
    ),
    max_size=2,
    unique_by=lambda tool: tool.name,
)
_format = st.none() | st.just(JsonObjectFormat()) | st.builds(
    JsonSchemaFormat, _schema, st.none() | st.just("answer"), st.none() | st.just("The answer."),
    st.none() | st.booleans()
)  # fmt: skip


@st.composite
def questions(draw: st.DrawFn) -> NeutralRequest:
    first = draw(_user)
    rest = draw(st.lists(_user | _assistant | _tool | _system_turn, max_size=5))
    return NeutralRequest(
        dialect=draw(st.sampled_from(TRANSLATED)),
        model="m",
        system=[t.text for t in draw(st.lists(_text, max_size=2))],
        messages=[first, *rest],
        tools=draw(_tools),
        tool_choice=draw(st.none() | st.sampled_from(["none", "required", ForcedTool("lookup")])),
        parallel_tool_calls=draw(st.sampled_from([None, False])),
        response_format=draw(_format),
        max_output_tokens=draw(st.none() | st.integers(1, 4096)),
        temperature=draw(st.none() | st.sampled_from([0.0, 0.5, 1.0, 1.5])),
        top_p=draw(st.none() | st.sampled_from([0.1, 1.0])),
        stop=draw(st.lists(st.text(min_size=1, max_size=4), max_size=5)),
        stream=draw(st.booleans()),
        reasoning_effort=draw(st.sampled_from([None, None, "low"])),
        verbosity=draw(st.sampled_from([None, None, "high"])),
    ).settle()


def expected_in(target: str, asked: NeutralRequest) -> NeutralRequest:
    """What `target` can carry of an asked question, where its wire form says less: Anthropic
    always has a token cap, and its structured output is strict and unnamed; OpenAI's output
    schemas always have a name."""
    expected = question(asked)
    fmt = asked.response_format
    if isinstance(fmt, JsonSchemaFormat) and fmt.name is None and target != "anthropic-messages":
        expected.response_format = replace(fmt, name=SCHEMA_NAME)
    if target == "anthropic-messages":
        expected.max_output_tokens = asked.max_output_tokens or CAP
        if isinstance(asked.response_format, JsonSchemaFormat):
            expected.response_format = JsonSchemaFormat(asked.response_format.schema, strict=True)
    return expected


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(questions())
def test_a_translation_asks_the_same_question_or_refuses(asked: NeutralRequest) -> None:
    for source in TRANSLATED:
        try:
            native = parse(source, render(source, asked))
        except Untranslatable:
            continue
        assert question(native) == expected_in(source, asked)
        for target in TRANSLATED:
            try:
                body = render(target, native)
            except Untranslatable as refused:
                assert refused.reason  # a reason, stored with the skipped shadow
                continue
            assert question(parse(target, body)) == expected_in(target, native)
