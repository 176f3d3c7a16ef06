"""json_schema_valid against hostile schemas: regexes run on RE2, remote $refs are never fetched."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from shadowtap.completion import Completion
from shadowtap.scorers.base import CpuScorer, Pair, Verdict

from tests.scorer_tables import scorers_from

# Exponential for a backtracking engine: Python's `re` needs hours for 40 `a` and a `!`.
CATASTROPHIC = "^(a+)+$"
EVIL_TEXT = "a" * 5000 + "!"


def schema_valid() -> CpuScorer[Any]:
    built = scorers_from({"s": {"type": "json_schema_valid"}})[0]
    assert isinstance(built, CpuScorer)
    return built


def judge(schema: Any, answer: Any) -> Verdict:
    request = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    completion = Completion(
        status=200, text=answer if isinstance(answer, str) else json.dumps(answer)
    )
    result = schema_valid().score(Pair(request, completion, completion, "primary", "primary"))
    assert isinstance(result, Verdict)
    return result


@pytest.mark.parametrize(
    ("schema", "valid"),
    [
        ({"type": "string", "pattern": CATASTROPHIC}, False),
        # The name does not match, so its value is not checked against {"type": "integer"}.
        ({"type": "object", "patternProperties": {CATASTROPHIC: {"type": "integer"}}}, True),
        (
            {
                "type": "object",
                "patternProperties": {CATASTROPHIC: {}},
                "additionalProperties": False,
            },
            False,
        ),
        ({"type": "object", "propertyNames": {"pattern": CATASTROPHIC}}, False),
    ],
    ids=["pattern", "patternProperties", "additionalProperties", "propertyNames"],
)
def test_a_catastrophic_pattern_is_matched_in_linear_time(schema: Any, valid: bool) -> None:
    # The evil text as the string itself, or as a property name (with an integer-less value).
    answer = json.dumps(EVIL_TEXT if schema["type"] == "string" else {EVIL_TEXT: "x"})
    verdict = judge(schema, answer)
    assert verdict.score == (1.0 if valid else 0.0)  # evaluated, not skipped
    assert verdict.detail is not None and verdict.detail["valid"] is valid


def test_patterns_still_validate() -> None:
    schema = {
        "type": "object",
        "properties": {"date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    assert judge(schema, {"date": "2024-05-01", "x-n": 3}).score == 1.0
    assert judge(schema, {"date": "May 1st"}).score == 0.0
    assert judge(schema, {"date": "2024-05-01", "x-n": "3"}).score == 0.0
    extra = judge(schema, {"date": "2024-05-01", "other": 1})
    assert extra.detail == {
        "valid": False,
        "error": "'other' does not match any of the regexes: '^x-'",
        "path": "$",
    }
    # Unicode text and patterns: RE2 matches code points, as `re` does.
    assert judge({"type": "string", "pattern": "^é+$"}, '"ééé"').score == 1.0


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "string", "pattern": "^(?=a)a$"}, "pattern not supported by RE2"),
        ({"type": "string", "pattern": r"^(a)\1$"}, "pattern not supported by RE2"),
        ({"patternProperties": {"(?<!x)y": {}}}, "pattern not supported by RE2"),
        # In a branch no answer may reach: still refused, so every answer of a request agrees.
        ({"anyOf": [{"type": "null"}, {"pattern": "(?!a)"}]}, "pattern not supported by RE2"),
        (
            {"patternProperties": {"^a": {}}, "unevaluatedProperties": False},
            "unevaluatedProperties with patternProperties is not evaluated",
        ),
    ],
)
def test_what_re2_cannot_run_is_not_applicable(schema: Any, reason: str) -> None:
    verdict = judge(schema, "null")
    assert verdict.score is None
    assert verdict.detail is not None and verdict.detail["reason"].startswith(reason)


def test_an_invalid_regex_is_not_applicable_not_an_error() -> None:
    verdict = judge({"type": "string", "pattern": "(unclosed"}, '"x"')
    assert verdict.score is None
    assert verdict.detail is not None and "RE2" in verdict.detail["reason"]


async def test_remote_refs_are_never_fetched(aiohttp_server: Any) -> None:
    hits: list[str] = []

    async def schema(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"type": "string"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", schema)
    server = await aiohttp_server(app)
    for ref in (str(server.make_url("/remote.json")), "file:///etc/hostname"):
        # In a thread: jsonschema's default fetch is a blocking urlopen this loop must serve.
        verdict = await asyncio.wait_for(asyncio.to_thread(judge, {"$ref": ref}, '"x"'), 30)
        assert verdict.score is None
        assert verdict.detail is not None
        assert verdict.detail["reason"].startswith("unresolvable $ref")
    assert hits == []
    # References within the schema still resolve.
    local = {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"}
    assert judge(local, '"x"').score == 1.0
    assert judge(local, "1").score == 0.0


def test_huge_deep_and_self_referencing_schemas_are_not_applicable() -> None:
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}
    assert judge(huge, "{}").detail == {"reason": "schema over 65536 characters"}
    deep: Any = {"type": "string"}
    for _ in range(100_000):
        deep = {"items": deep}
    assert judge(deep, "[]").detail == {"reason": "schema nested too deeply"}
    looping = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    verdict = judge(looping, '"x"')
    assert verdict.score is None and verdict.detail is not None
    assert "nested too deeply" in verdict.detail["reason"]


def test_a_deeply_nested_answer_is_not_applicable() -> None:
    verdict = judge({"type": "array"}, "[" * 100_000 + "]" * 100_000)
    assert verdict == Verdict(None, {"reason": "answer nested too deeply to parse"})
