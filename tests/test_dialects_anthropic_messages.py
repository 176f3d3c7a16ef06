"""shadowtap.dialects.anthropic_messages: Messages API requests to and from the neutral model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from shadowtap.dialects.anthropic_messages import parse, render
from shadowtap.dialects.neutral import (
    ForcedTool,
    FunctionTool,
    Image,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NeutralRequest,
    RenderOptions,
    Text,
    ToolUse,
    Untranslatable,
)

from tests.sdk_shapes import conforms

REQUESTS = Path(__file__).parent / "fixtures" / "dialects" / "requests"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # noqa: E501


def messages(*turns: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": list(turns), **fields}


USER = {"role": "user", "content": "Hi"}


def test_the_canonical_body_renders_back_to_itself_in_the_sdk_shape() -> None:
    body = json.loads((REQUESTS / "weather-agent.anthropic-messages.json").read_text())
    rendered = render(parse(body), "claude-sonnet-4-5")
    assert rendered == body
    conforms(MessageCreateParamsStreaming, rendered)


def test_tool_results_are_turns_of_their_own_and_are_gathered_back() -> None:
    body = messages(
        USER,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two lookups.", "signature": "sig"},
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}},
                {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": "b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "timeout"}],
                },
                {"type": "text", "text": "Summarize.", "cache_control": {"type": "ephemeral"}},
            ],
        },
    )
    request = parse(body)
    assert request.messages == [
        Message("user", [Text("Hi")]),
        Message(
            "assistant",
            [Text("Checking both.")],
            [ToolUse("toolu_1", "lookup", '{"q":"a"}'), ToolUse("toolu_2", "lookup", '{"q":"b"}')],
        ),
        Message("tool", [Text("A")], tool_call_id="toolu_1"),
        Message("tool", [Text("timeout")], tool_call_id="toolu_2", is_error=True),
        Message("user", [Text("Summarize.")]),
    ]
    assert request.dropped == ["thinking"] and request.unportable == []
    rendered = render(request, None)
    assert rendered["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "content": "timeout",
                "is_error": True,
            },
            {"type": "text", "text": "Summarize."},
        ],
    }
    assert parse(rendered).messages == request.messages
    conforms(MessageCreateParamsNonStreaming, rendered)


def test_system_blocks_images_and_choices() -> None:
    body = messages(
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},  # noqa: E501
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "Same place?"},
            ],
        },
        system=[
            {"type": "text", "text": "You compare photos.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer yes or no."},
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        tools=[{"name": "geo", "input_schema": {"type": "object"}, "strict": True}],
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        stop_sequences=["\n\nHuman:"],
        metadata={"user_id": "u-1"},
        thinking={"type": "disabled"},
    )  # fmt: skip
    request = parse(body)
    assert request.system == ["You compare photos.", "Answer yes or no."]
    assert request.messages[0].content == [
        Image(f"data:image/png;base64,{PNG}"),
        Image("https://example.com/a.jpg"),
        Text("Same place?"),
    ]
    assert request.tool_choice == "required" and request.parallel_tool_calls is False
    assert request.tools == [FunctionTool("geo", parameters={"type": "object"}, strict=True)]
    assert request.response_format == JsonSchemaFormat({"type": "object"}, strict=True)
    assert request.stop == ["\n\nHuman:"]
    assert request.unportable == [] and sorted(request.dropped) == ["metadata", "thinking"]
    rendered = render(request, None)
    assert rendered["system"] == [
        {"type": "text", "text": "You compare photos."},
        {"type": "text", "text": "Answer yes or no."},
    ]
    assert rendered["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert rendered["messages"][0]["content"][0]["source"]["media_type"] == "image/png"
    assert parse(rendered) == NeutralRequest(**{**vars_of(request), "dropped": []})
    conforms(MessageCreateParamsNonStreaming, rendered)


def vars_of(request: NeutralRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__slots__}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("choice", "tool_choice", "parallel"),
    [
        ({"type": "auto"}, None, None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "geo"}, ForcedTool("geo"), None),
        ({"type": "auto", "disable_parallel_tool_use": True}, None, False),
    ],
)
def test_tool_choice_round_trip(choice: dict[str, Any], tool_choice: Any, parallel: Any) -> None:
    request = parse(messages(USER, tool_choice=choice))
    assert (request.tool_choice, request.parallel_tool_calls) == (tool_choice, parallel)
    assert render(request, None).get("tool_choice", {"type": "auto"}) == choice


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (messages(USER, top_k=40), "field 'top_k'"),
        (messages(USER, thinking={"type": "enabled", "budget_tokens": 2048}), "field 'thinking'"),
        (messages(USER, mcp_servers=[]), "field 'mcp_servers'"),
        (messages(USER, output_config={"effort": "low"}), "output_config: field 'effort'"),
        (messages(USER, tools=[{"type": "web_search_20250305", "name": "web_search"}]), "provider-run"),  # noqa: E501
        (messages(USER, tools=[{"name": "f", "input_schema": {}, "input_examples": [{}]}]), "input_examples"),  # noqa: E501
        (
            messages({"role": "user", "content": [{"type": "document", "source": {}}]}),
            "a block of type document",
        ),
        (
            messages({"role": "assistant", "content": [{"type": "server_tool_use", "id": "s"}]}),
            "a block of type server_tool_use",
        ),
        (
            messages({"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}),
            "stored with the provider",
        ),
        (messages(USER, system=[{"type": "image"}]), "system[0]"),
    ],
)  # fmt: skip
def test_what_has_no_faithful_translation_is_refused(body: dict[str, Any], reason: str) -> None:
    request = parse(body)
    assert any(reason in r for r in request.unportable), request.unportable
    with pytest.raises(Untranslatable):
        render(request, "m")


def user_says(*parts: Any, **fields: Any) -> NeutralRequest:
    return NeutralRequest("openai-chat", messages=[Message("user", list(parts))], **fields)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (user_says(Text("x"), temperature=1.5), "temperature 1.5 is above"),
        (user_says(Text("x"), response_format=JsonObjectFormat()), "JSON mode"),
        (
            user_says(Text("x"), response_format=JsonSchemaFormat({}, description="d")),
            "a description of the output schema",
        ),
        (user_says(Text("x"), reasoning_effort="high"), "reasoning_effort"),
        (user_says(Text("x"), verbosity="low"), "verbosity"),
        (user_says(Image("https://x/y.png", detail="low")), "an image detail level"),
        (user_says(Image("data:image/bmp;base64,Qk0=")), "an image of a type"),
        (user_says(Image("file-abc123")), "cannot fetch"),
        (user_says(), "an empty user message"),
        (
            NeutralRequest(
                "openai-chat",
                messages=[Message("user", [Text("a")]), Message("system", [Text("b")])],
            ),
            "a system message after the conversation started",
        ),
        (
            NeutralRequest(
                "openai-chat",
                messages=[
                    Message("assistant", tool_calls=[ToolUse("c", "f", "[1, 2]")]),
                    Message("tool", [Text("3")], tool_call_id="c"),
                ],
            ),
            "not a JSON object",
        ),
    ],
)
def test_render_refuses_what_anthropic_cannot_say(request_: NeutralRequest, reason: str) -> None:
    with pytest.raises(Untranslatable) as refused:
        render(request_, "claude-haiku-4-5")
    assert reason in refused.value.reason


def test_max_tokens_is_required_so_a_default_fills_it() -> None:
    request = user_says(Text("x"))
    assert render(request, "m")["max_tokens"] == RenderOptions().default_max_tokens
    assert render(request, "m", RenderOptions(default_max_tokens=1000))["max_tokens"] == 1000
    request.max_output_tokens = 64
    assert render(request, "m", RenderOptions(default_max_tokens=1000))["max_tokens"] == 64


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "max_tokens": 5},
        messages({"role": "robot", "content": "x"}),
        messages({"role": "user", "content": [{"type": "text"}]}),
        messages({"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}),
        messages({"role": "user", "content": [{"type": "tool_result"}]}),
        messages(USER, system=7),
        messages(USER, tools=[{"name": "f"}]),
        messages(USER, tool_choice="auto"),
        messages(USER, stop_sequences="END"),
        messages(USER, max_tokens="many"),
    ],
)
def test_a_body_of_the_wrong_shape_is_untranslatable_not_a_crash(body: dict[str, Any]) -> None:
    with pytest.raises(Untranslatable):
        parse(body)
