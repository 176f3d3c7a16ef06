"""shadowtap.dialects.openai_chat: chat-completions requests to and from the neutral model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from shadowtap.dialects import DIALECTS, Untranslatable, translate
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
)
from shadowtap.dialects.openai_chat import parse, render

from tests.sdk_shapes import conforms

REQUESTS = Path(__file__).parent / "fixtures" / "dialects" / "requests"
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def load(name: str) -> dict[str, Any]:
    return json.loads((REQUESTS / name).read_text(encoding="utf-8"))


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages), **fields}


USER = {"role": "user", "content": "Hi"}


def test_parse_reads_the_whole_conversation() -> None:
    request = parse(load("weather-agent.openai-chat.json"))
    assert request == NeutralRequest(
        dialect="openai-chat",
        model="gpt-4o",
        system=["You are a weather assistant. Answer in one sentence."],
        messages=[
            Message("user", [Text("What's the weather in Paris and Tokyo?")]),
            Message(
                "assistant",
                tool_calls=[
                    ToolUse("call_1", "get_weather", '{"city":"Paris"}'),
                    ToolUse("call_2", "get_weather", '{"city":"Tokyo"}'),
                ],
            ),
            Message("tool", [Text("18°C, sunny")], tool_call_id="call_1"),
            Message("tool", [Text("24°C, rain")], tool_call_id="call_2"),
            Message("assistant", [Text("Paris is sunny at 18°C; Tokyo has rain at 24°C.")]),
            Message(
                "user",
                [
                    Text("And where was this photo taken?"),
                    Image("https://example.com/street.jpg"),
                ],
            ),
        ],
        tools=[FunctionTool("get_weather", "Current weather for a city.", WEATHER_PARAMETERS)],
        tool_choice=ForcedTool("get_weather"),
        parallel_tool_calls=False,
        max_output_tokens=512,
        temperature=0.2,
        top_p=0.9,
        stream=True,
        dropped=["stream_options"],
    )


def test_render_gives_back_the_canonical_body_in_the_sdk_shape() -> None:
    body = load("weather-agent.openai-chat.json")
    rendered = render(parse(body), "gpt-4o")
    assert rendered == body
    conforms(CompletionCreateParamsStreaming, rendered)


def test_render_replaces_the_model_or_keeps_it() -> None:
    request = parse(chat(USER))
    assert render(request, "llama-3.1-8b")["model"] == "llama-3.1-8b"
    assert render(request, None)["model"] == "gpt-4o"


def test_defaults_are_spelled_once() -> None:
    body = chat(
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "auto"}}]},  # noqa: E501
        {"role": "assistant", "content": ""},
        tool_choice="auto",
        parallel_tool_calls=True,
        max_tokens=64,
        stop="END",
        response_format={"type": "text"},
        user="u-1",
        n=1,
        logprobs=False,
        presence_penalty=0,
        seed=None,
    )  # fmt: skip
    request = parse(body)
    assert request.system == ["Be brief."]
    assert request.messages == [Message("user", [Image("u")]), Message("assistant")]
    assert request.tool_choice is None and request.parallel_tool_calls is None
    assert request.response_format is None
    assert request.max_output_tokens == 64 and request.stop == ["END"]
    assert request.unportable == []
    assert sorted(request.dropped) == ["logprobs", "n", "presence_penalty", "seed", "user"]
    rendered = render(request, None, RenderOptions(chat_max_tokens_field="max_tokens"))
    assert rendered["max_tokens"] == 64 and "max_completion_tokens" not in rendered
    conforms(CompletionCreateParamsNonStreaming, rendered)


def test_structured_output_and_json_mode() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    spec = {"name": "place", "schema": schema, "strict": True, "description": "Where."}
    request = parse(chat(USER, response_format={"type": "json_schema", "json_schema": spec}))
    assert request.response_format == JsonSchemaFormat(schema, "place", "Where.", True)
    assert render(request, None)["response_format"] == {"type": "json_schema", "json_schema": spec}
    request = parse(chat(USER, response_format={"type": "json_object"}))
    assert request.response_format == JsonObjectFormat()
    assert render(request, None)["response_format"] == {"type": "json_object"}


def test_a_function_without_parameters_has_the_empty_object_schema() -> None:
    request = parse(chat(USER, tools=[{"type": "function", "function": {"name": "now"}}]))
    assert request.tools == [FunctionTool("now")]
    assert render(request, None)["tools"] == [
        {"type": "function", "function": {"name": "now", "parameters": EMPTY}}
    ]


EMPTY = {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (chat(USER, n=2), "field 'n'"),
        (chat(USER, logprobs=True, top_logprobs=3), "field 'logprobs'"),
        (chat(USER, frequency_penalty=0.5), "field 'frequency_penalty'"),
        (chat(USER, seed=7), "field 'seed'"),
        (chat(USER, modalities=["text", "audio"]), "field 'modalities'"),
        (chat(USER, functions=[{"name": "f"}]), "field 'functions'"),
        (chat(USER, web_search_options={}), "field 'web_search_options'"),
        (chat({"role": "user", "content": "Hi", "name": "ann"}), "messages[0]: field 'name'"),
        (chat({"role": "function", "name": "f", "content": "1"}), "a role other than"),
        (
            chat({"role": "assistant", "content": None, "refusal": "No."}),
            "messages[0]: field 'refusal'",
        ),
        (
            chat({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}),
            "audio input",
        ),
        (chat({"role": "user", "content": [{"type": "file", "file": {}}]}), "file input"),
        (
            chat({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
            "an image in a system message",
        ),
        (chat(USER, tools=[{"type": "custom", "custom": {"name": "x"}}]), "not a function"),
        (
            chat(USER, tool_choice={"type": "allowed_tools", "allowed_tools": {}}),
            "tool_choice",
        ),
        (chat(USER, response_format={"type": "grammar"}), "response_format"),
    ],
)
def test_what_has_no_faithful_translation_is_refused(body: dict[str, Any], reason: str) -> None:
    request = parse(body)
    assert any(reason in r for r in request.unportable), request.unportable
    with pytest.raises(Untranslatable) as refused:
        render(request, "m")
    assert reason in refused.value.reason


def test_a_reason_never_quotes_request_values() -> None:
    secret = "sk-proj-Zx81-secret"
    request = parse(chat({"role": "user", "content": secret, "name": secret}, **{secret: secret}))
    assert request.unportable and all(secret not in r for r in request.unportable)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"model": "m", "messages": {"role": "user"}},
        chat("hello"),
        chat({"role": "user", "content": 3}),
        chat({"role": "user", "content": [{"type": "text", "text": None}]}),
        chat({"role": "assistant", "tool_calls": {"id": 1}}),
        chat(
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}
        ),
        chat({"role": "tool", "content": "x"}),
        chat(USER, tools=[{"type": "function"}]),
        chat(USER, temperature="hot"),
        chat(USER, temperature=float("nan")),
        chat(USER, max_tokens=True),
        chat(USER, stop=[1]),
        chat(USER, model=["gpt-4o"]),
    ],
)
def test_a_body_of_the_wrong_shape_is_untranslatable_not_a_crash(body: dict[str, Any]) -> None:
    with pytest.raises(Untranslatable):
        parse(body)


def test_render_refuses_what_chat_cannot_say() -> None:
    tool_image = NeutralRequest(
        "anthropic-messages",
        messages=[Message("tool", [Image("https://x/y.png")], tool_call_id="t1")],
    )
    with pytest.raises(Untranslatable, match="images in a tool result"):
        render(tool_image, "m")
    failed = NeutralRequest(
        "anthropic-messages", messages=[Message("tool", [Text("boom")], "t1", is_error=True)]
    )
    with pytest.raises(Untranslatable, match="flagged as an error"):
        render(failed, "m")
    prefill = NeutralRequest(
        "anthropic-messages",
        messages=[Message("user", [Text("Say hi")]), Message("assistant", [Text("Hi")])],
    )
    with pytest.raises(Untranslatable, match="ending with an assistant turn"):
        render(prefill, "m")
    assert render(parse(chat(USER, {"role": "assistant", "content": "Hi"})), "m")


def test_more_stop_sequences_than_chat_takes() -> None:
    request = NeutralRequest("anthropic-messages", messages=[Message("user", [Text("x")])])
    request.stop = ["a", "b", "c", "d", "e"]
    with pytest.raises(Untranslatable, match="5 stop sequences"):
        render(request, "m")


def test_translate_to_the_same_dialect_only_replaces_the_model() -> None:
    body = chat(USER, n=3, logprobs=True)
    assert orjson.loads(translate(body, "openai-chat", "openai-chat", "m2")) == {
        **body,
        "model": "m2",
    }
    assert orjson.loads(translate(body, "openai-chat", "openai-chat", None)) == body


def test_translate_refuses_a_body_too_deep_to_encode() -> None:
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(300):
        deep = {"anyOf": [deep]}
    body = chat(USER, tools=[{"type": "function", "function": {"name": "f", "parameters": deep}}])
    with pytest.raises(Untranslatable, match="nested too deeply"):
        translate(body, "openai-chat", "openai-chat", "m")


def test_the_registry_reads_chat_answers() -> None:
    dialect = DIALECTS["openai-chat"]
    assert dialect.path == "/v1/chat/completions"
    answer = b'{"choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}]}'
    assert dialect.completion_from_json(answer, 200).text == "ok"
    assembler = dialect.assembler()
    assert assembler.feed(b'data: {"choices":[{"index":0,"delta":{"content":"o"}}]}\n\n')
    assert assembler.finish(200).text == "o"


def test_the_sdk_shape_check_can_fail() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        conforms(CompletionCreateParamsNonStreaming, chat({"role": "robot", "content": "x"}))
    with pytest.raises(ValidationError):
        conforms(CompletionCreateParamsNonStreaming, chat(USER, tools=[{"type": "function"}]))
