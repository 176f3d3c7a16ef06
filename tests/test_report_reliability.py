"""The functional checks on single answers: each breakage found, nothing else flagged, and
hostile answers and schemas (deep nesting, huge texts, backtracking regexes, remote refs)
answered in bounded time."""

from __future__ import annotations

import json

import pytest
from shadowtap.report.reliability import MAX_CHECKED_CHARS, Answer, check, declared_tools

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
CHAT_TOOLS = json.dumps([{"type": "function", "function": {"name": "w", "parameters": WEATHER}}])
RESPONSES_TOOLS = json.dumps([{"type": "function", "name": "w", "parameters": WEATHER}])
ANTHROPIC_TOOLS = json.dumps([{"name": "w", "input_schema": WEATHER}])
REVIEW = {"type": "object", "properties": {"rating": {"type": "integer"}}, "required": ["rating"]}


def answer(**fields: object) -> Answer:
    base: dict[str, object] = {
        "request_id": "r",
        "ok": True,
        "finish_reason": "stop",
        "blank": False,
        "head": "Fine.",
        "json_text": None,
        "tool_calls": None,
        "json_mode": None,
        "schema_json": None,
        "tools_json": None,
    }
    base.update(fields)
    return Answer(**base)  # type: ignore[arg-type]


def calls(*items: tuple[str, str | None]) -> str:
    return json.dumps(
        [{"id": "c", "name": n} | ({} if a is None else {"arguments": a}) for n, a in items]
    )


def broken(result: dict[str, bool | None]) -> set[str]:
    return {name for name, value in result.items() if value}


def test_a_plain_good_answer_breaks_nothing() -> None:
    result = check(answer())
    assert broken(result) == set()
    assert result["invalid_json"] is None and result["invalid_tool_call"] is None


def test_a_failed_request_is_not_judged() -> None:
    assert set(check(answer(ok=False, blank=True)).values()) == {None}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"blank": True, "head": ""}, {"empty"}),
        ({"finish_reason": "length"}, {"truncated"}),
        ({"finish_reason": "max_tokens"}, {"truncated"}),
        ({"finish_reason": "content_filter"}, {"refused"}),
        ({"head": "I\u2019m sorry, but I can\u2019t help with that."}, {"refused"}),
        ({"json_mode": "json_object", "json_text": '{"a": 1}'}, set()),
        ({"json_mode": "json_object", "json_text": '```json\n{"a": 1}\n```'}, {"invalid_json"}),
        ({"json_mode": "json_object", "json_text": '{"a": 1'}, {"invalid_json"}),
        # Over MAX_CHECKED_CHARS the text is not fetched: counted as not JSON only if fetched.
        ({"json_mode": "json_schema", "json_text": '{"rating": 4}'}, set()),
    ],
)
def test_each_breakage_is_found(fields: dict[str, object], expected: set[str]) -> None:
    assert broken(check(answer(**fields))) == expected


def test_structured_output_against_its_schema() -> None:
    schema = json.dumps(REVIEW)
    ok = answer(json_mode="json_schema", schema_json=schema, json_text='{"rating": 4}')
    off = answer(json_mode="json_schema", schema_json=schema, json_text='{"rating": "four"}')
    not_json = answer(json_mode="json_schema", schema_json=schema, json_text="four stars")
    assert broken(check(ok)) == set()
    assert broken(check(off)) == {"schema_invalid"}
    assert broken(check(not_json)) == {"invalid_json", "schema_invalid"}


@pytest.mark.parametrize("tools", [CHAT_TOOLS, RESPONSES_TOOLS, ANTHROPIC_TOOLS])
@pytest.mark.parametrize(
    ("call", "invalid"),
    [
        (("w", '{"city": "Oslo"}'), False),
        (("x", '{"city": "Oslo"}'), True),  # a tool the request never declared
        (("w", '{"city": "Oslo"'), True),  # arguments that do not parse
        (("w", '{"town": 3}'), True),  # arguments off the declared parameters
        (("w", None), False),  # arguments not stored (bodies = "none"): name checked only
    ],
)
def test_tool_calls_in_every_dialect(
    tools: str, call: tuple[str, str | None], invalid: bool
) -> None:
    result = check(answer(tool_calls=calls(call), tools_json=tools, blank=True, head=None))
    assert result["invalid_tool_call"] is invalid
    assert result["empty"] is False  # a tool call is an answer


def test_a_tool_call_without_declared_tools_is_unknown() -> None:
    result = check(answer(tool_calls=calls(("w", "{}")), tools_json="[]"))
    assert result["invalid_tool_call"] is True
    assert declared_tools(None) is None  # unknown tools (no stored body): names not judged
    unknown = check(answer(tool_calls=calls(("w", "{}")), tools_json=None))
    assert unknown["invalid_tool_call"] is False


def test_hostile_answers_and_schemas_stay_bounded() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert check(answer(json_mode="json_object", json_text=deep))["invalid_json"] is True
    deep_args = check(answer(tool_calls=calls(("w", deep)), tools_json=CHAT_TOOLS))
    assert deep_args["invalid_tool_call"] is True
    huge = "x" * (MAX_CHECKED_CHARS + 1)
    assert (
        check(answer(tool_calls=calls(("w", huge)), tools_json=CHAT_TOOLS))["invalid_tool_call"]
        is False
    )  # too long to parse: not judged
    # A catastrophic-backtracking pattern runs on RE2 (linear), and a remote $ref is never
    # fetched: the check answers quickly, as "not applicable" when it cannot judge.
    evil = {"type": "string", "pattern": "^(a+)+$"}
    schema = json.dumps({"type": "object", "properties": {"s": evil}})
    text = json.dumps({"s": "a" * 50_000 + "!"})
    result = check(answer(json_mode="json_schema", schema_json=schema, json_text=text))
    assert result["schema_invalid"] is True
    remote = json.dumps({"$ref": "http://127.0.0.1:9/schema.json"})
    fetched = check(answer(json_mode="json_schema", schema_json=remote, json_text="{}"))
    assert fetched["schema_invalid"] is None
    many = calls(*[("w", '{"city": "x"}')] * 10_000)
    assert check(answer(tool_calls=many, tools_json=CHAT_TOOLS))["invalid_tool_call"] is False
