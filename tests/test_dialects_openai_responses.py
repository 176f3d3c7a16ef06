"""shadowtap.dialects.openai_responses: Responses API requests to and from the neutral model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from shadowtap.dialects.neutral import (
    FunctionTool,
    Image,
    JsonSchemaFormat,
    Message,
    NeutralRequest,
    Text,
    ToolUse,
    Untranslatable,
)
from shadowtap.dialects.openai_responses import parse, render

from tests.sdk_shapes import conforms

REQUESTS = Path(__file__).parent / "fixtures" / "dialects" / "requests"
OUTPUT_TEXT = {"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}


def responses(input_: object, **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1", "input": input_, **fields}


def test_the_canonical_body_renders_back_to_itself_in_the_sdk_shape() -> None:
    body = json.loads((REQUESTS / "weather-agent.openai-responses.json").read_text())
    rendered = render(parse(body), "gpt-4o")
    assert rendered == body
    conforms(ResponseCreateParamsStreaming, rendered)


def test_a_string_input_is_one_user_turn() -> None:
    request = parse(responses("Hi", instructions="Be brief."))
    assert (request.system, request.messages) == (["Be brief."], [Message("user", [Text("Hi")])])
    rendered = render(request, None)
    assert rendered == {
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": "Hi"}],
        "store": False,
    }
    conforms(ResponseCreateParamsNonStreaming, rendered)


def test_items_passed_back_from_an_earlier_response() -> None:
    """What a client sends when it appends `response.output` to its next request."""
    body = responses(
        [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [OUTPUT_TEXT]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "go",
             "arguments": "{}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_1",
             "output": [{"type": "input_text", "text": "done"},
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
        ],
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        text={"verbosity": "low", "format": {"type": "json_schema", "name": "out",
                                              "schema": {"type": "object"}, "strict": True}},
        tools=[{"type": "function", "name": "go", "parameters": None, "strict": None}],
        tool_choice="required",
        store=False,
    )  # fmt: skip
    request = parse(body)
    assert request.system == ["Use tools."]
    assert request.messages == [
        Message("user", [Text("Go")]),
        Message("assistant", [Text("Checking.")], [ToolUse("call_1", "go", "{}")]),
        Message("tool", [Text("done"), Image("https://x/y.png", "low")], tool_call_id="call_1"),
    ]
    assert request.tools == [FunctionTool("go", strict=True)]  # the Responses default
    assert request.tool_choice == "required"
    assert (request.reasoning_effort, request.verbosity) == ("low", "low")
    assert request.response_format == JsonSchemaFormat({"type": "object"}, "out", None, True)
    assert request.unportable == []
    assert sorted(request.dropped) == ["include", "reasoning", "reasoning.summary", "store"]
    rendered = render(request, None)
    assert rendered["input"][2:] == [
        {"type": "function_call", "call_id": "call_1", "name": "go", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": [
            {"type": "input_text", "text": "done"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
    ]  # fmt: skip
    assert rendered["tools"][0]["strict"] is True
    conforms(ResponseCreateParamsNonStreaming, rendered)


def test_strictness_is_explicit_because_the_defaults_differ() -> None:
    chat_tool = NeutralRequest(
        "openai-chat", messages=[Message("user", [Text("x")])], tools=[FunctionTool("f")]
    )
    assert render(chat_tool, "m")["tools"][0]["strict"] is False


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (responses("x", previous_response_id="resp_1"), "field 'previous_response_id'"),
        (responses("x", conversation="conv_1"), "field 'conversation'"),
        (responses("x", prompt={"id": "pmpt_1"}), "field 'prompt'"),
        (responses("x", background=True), "field 'background'"),
        (responses("x", top_logprobs=2), "field 'top_logprobs'"),
        (responses("x", include=["message.output_text.logprobs"]), "logprobs"),
        (responses("x", tools=[{"type": "web_search"}]), "a provider-run tool"),
        (responses("x", tool_choice={"type": "file_search"}), "tool_choice"),
        (responses([{"type": "item_reference", "id": "msg_1"}]), "an item of type item_reference"),
        (responses([{"type": "web_search_call", "id": "ws_1"}]), "an item of type web_search_call"),
        (responses([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
         "file input"),
        (responses([{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]),
         "stored with the provider"),
        (responses("x", reasoning={"effort": "high", "mode": "deep"}), "reasoning: field 'mode'"),
    ],
)  # fmt: skip
def test_what_has_no_faithful_translation_is_refused(body: dict[str, Any], reason: str) -> None:
    request = parse(body)
    assert any(reason in r for r in request.unportable), request.unportable
    with pytest.raises(Untranslatable):
        render(request, "m")


def test_stop_sequences_cannot_be_asked() -> None:
    request = NeutralRequest("openai-chat", messages=[Message("user", [Text("x")])], stop=["END"])
    with pytest.raises(Untranslatable, match="stop sequences: no equivalent in openai-responses"):
        render(request, "m")


@pytest.mark.parametrize(
    "body",
    [
        responses(7),
        responses([["user", "hi"]]),
        responses([{"role": "robot", "content": "hi"}]),
        responses([{"type": "function_call", "name": "f", "arguments": "{}"}]),
        responses([{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]),
        responses([{"type": "function_call_output", "output": "x"}]),
        responses("x", tools=[{"type": "function"}]),
        responses("x", text={"format": {"type": "json_schema", "name": "n"}}),
        responses("x", instructions=["a"]),
        responses("x", max_output_tokens=1.5),
    ],
)
def test_a_body_of_the_wrong_shape_is_untranslatable_not_a_crash(body: dict[str, Any]) -> None:
    with pytest.raises(Untranslatable):
        parse(body)
