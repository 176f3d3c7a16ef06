"""Structured scorers on hand-built pairs: json_match, tool_calls, json_schema_valid."""

from __future__ import annotations

import json
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shadowtap.completion import Completion, ToolCall
from shadowtap.scorers.base import CpuScorer, Pair, Verdict

from tests.scorer_tables import scorers_from


def scorer(type_name: str, **options: Any) -> CpuScorer[Any]:
    built = scorers_from({"s": {"type": type_name, **options}})[0]
    assert isinstance(built, CpuScorer)
    return built


def answer(text: str | None = None, calls: list[ToolCall] | None = None) -> Completion:
    return Completion(status=200, text=text, tool_calls=calls or [])


def pair(a: Completion, b: Completion, request: dict[str, Any] | None = None) -> Pair:
    return Pair(request, a, b, "cand", "candidate")


def value(result: float | Verdict | None) -> float | None:
    return result.score if isinstance(result, Verdict) else result


# -- json_match --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ('{"a": 1, "b": 2}', '{"b": 2, "a": 1}', 1.0),
        ('{"a": 1, "b": 2}', '{"a": 1, "b": 3}', 0.5),
        ('{"a": 1}', '{"a": 1, "b": 2}', 0.5),  # an extra field disagrees
        ('{"a": 1}', '{"a": 1.0}', 1.0),
        ('{"a": true}', '{"a": 1}', 0.0),
        ('{"a": [1, 2]}', '{"a": [2, 1]}', 0.0),  # array order is meaningful
        ('{"a": {}}', '{"a": {}}', 1.0),
        ('{"a": {}}', '{"a": []}', 0.0),
        ('{"name": "Zoë", "city": "東京"}', '{"city": "東京", "name": "Zoë"}', 1.0),
        ('```json\n{"a": 1}\n```', '{"a": 1}', 1.0),
        ("42", "42", 1.0),
        ('{"a": 1}', "not json at all", 0.0),
        ('{"a": 1}', "", 0.0),
        ('{"a": 1', '{"a": 1}', None),  # primary invalid JSON: not applicable
        ("Paris.", '{"a": 1}', None),
        ("", "", None),
    ],
)
def test_json_match(a: str, b: str, expected: float | None) -> None:
    assert value(scorer("json_match").score(pair(answer(a), answer(b)))) == expected


def test_json_match_detail_and_ignore_keys() -> None:
    a = '{"id": "x1", "meta": {"created_at": 1, "v": 2}, "items": [{"id": 1, "n": "a"}]}'
    b = '{"id": "y9", "meta": {"created_at": 7, "v": 2}, "items": [{"id": 2, "n": "a"}]}'
    plain = scorer("json_match").score(pair(answer(a), answer(b)))
    assert isinstance(plain, Verdict)
    assert plain.score == pytest.approx(2 / 5)
    assert plain.detail is not None
    assert plain.detail["differing"] == ["$.id", "$.items[0].id", "$.meta.created_at"]
    ignoring = scorer("json_match", ignore_keys=["id", "meta.created_at"])
    assert value(ignoring.score(pair(answer(a), answer(b)))) == 1.0
    # A dotted path only ignores that place: "v" elsewhere still counts.
    only_path = scorer("json_match", ignore_keys=["meta.v"])
    assert value(only_path.score(pair(answer('{"v": 1}'), answer('{"v": 2}')))) == 0.0
    everything = scorer("json_match", ignore_keys=["id"])
    assert value(everything.score(pair(answer('{"id": 1}'), answer('{"id": 2}')))) is None


def test_json_match_large_and_deep_documents() -> None:
    big = {f"k{i}": {"v": i, "s": "x" * 40} for i in range(1500)}  # ~100 kB
    changed = {**big, "k0": {"v": -1, "s": "x" * 40}}
    result = value(
        scorer("json_match").score(pair(answer(json.dumps(big)), answer(json.dumps(changed))))
    )
    assert result == pytest.approx(2999 / 3000)
    deep: Any = 1
    for _ in range(300):  # deeper than a naive recursive flatten could go comfortably
        deep = [deep]
    text = json.dumps(deep)
    assert value(scorer("json_match").score(pair(answer(text), answer(text)))) == 1.0
    deeper = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser goes
    assert scorer("json_match").score(pair(answer(deeper), answer("[]"))) == Verdict(
        None, {"reason": "primary nested too deeply to parse"}
    )


def reference_flatten(value: Any, ignored: frozenset[str]) -> dict[str, Any]:
    """The documented meaning of json_match's fields, spelled out naively as an oracle."""
    from shadowtap.scorers.json_match import _leaf

    fields: dict[str, Any] = {}

    def walk(path: str, keys: tuple[str, ...], node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, child in node.items():
                if key in ignored or ".".join((*keys, key)) in ignored:
                    continue
                walk(f"{path}.{key}", (*keys, key), child)
        elif isinstance(node, list) and node:
            for index, child in enumerate(node):
                walk(f"{path}[{index}]", keys, child)
        else:
            fields[path] = _leaf(node)

    walk("$", (), value)
    return fields


KEYS = st.sampled_from(["a", "b", "id", "meta", "0"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([1.0, "x", "y"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=12,
)


@given(JSON, JSON, st.lists(st.sampled_from(["id", "meta.a", "a.b", "b"]), max_size=2))
def test_json_match_agrees_with_the_naive_definition(a: Any, b: Any, ignore: list[str]) -> None:
    fa, fb = reference_flatten(a, frozenset(ignore)), reference_flatten(b, frozenset(ignore))
    paths = fa.keys() | fb.keys()
    result = scorer("json_match", ignore_keys=ignore).score(
        pair(answer(json.dumps(a)), answer(json.dumps(b)))
    )
    assert isinstance(result, Verdict)
    if not paths:
        assert result.score is None
        return
    agreeing = sum(1 for p in paths if p in fa and p in fb and fa[p] == fb[p])
    assert result.detail is not None
    assert (result.detail["fields"], result.detail["agreeing"]) == (len(paths), agreeing)
    assert set(result.detail["differing"]) <= paths


def test_json_match_memory_is_linear_in_the_answer() -> None:
    # One long key over many fields: a path string per field was 5000 x 20 kB = 100 MB a side.
    doc = {"k" * 20_000: list(range(5000))}
    changed = {"k" * 20_000: [*range(4999), -1]}
    tracemalloc.start()
    try:
        result = scorer("json_match").score(
            pair(answer(json.dumps(doc)), answer(json.dumps(changed)))
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(result, Verdict) and result.detail is not None
    assert result.score == pytest.approx(4999 / 5000)
    (path,) = result.detail["differing"]
    assert len(path) == 200 and path.startswith("$.kkk")  # listed paths are cut short
    assert peak < 10 * 1024 * 1024, peak  # the two documents are ~100 kB of JSON


def finishes(work: Callable[[], Any], within_s: float = 60.0) -> Any:
    """Run `work` in a daemon thread; a super-linear algorithm would still be running."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()
    thread.join(within_s)
    assert box, f"still running after {within_s} s"
    return box[0]


# -- tool_calls --------------------------------------------------------------------------------


def call(name: str, arguments: str, call_id: str | None = None) -> ToolCall:
    return ToolCall(name=name, arguments=arguments, id=call_id)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (
            [call("get", '{"city": "Paris", "unit": "C"}')],
            [call("get", '{"unit":"C","city":"Paris"}', "x")],
            1.0,
        ),
        ([call("get", '{"city": "Paris"}')], [call("get", '{"city": "Lyon"}')], 0.5),
        ([call("get", "{}")], [call("put", "{}")], 0.0),
        ([call("a", "{}"), call("b", "{}")], [call("b", "{}"), call("a", "{}")], 1.0),
        ([call("a", "{}"), call("b", "{}")], [call("a", "{}")], 0.5),
        ([call("a", "{}")], [], 0.0),
        ([call("a", "{not json")], [call("a", " {not json ")], 1.0),
        ([call("a", "{not json")], [call("a", '{"x": 1}')], 0.5),
        ([call("a", "")], [call("a", "{}")], 1.0),  # empty arguments mean no arguments
        ([call("a", '{"q": "café 東京"}')], [call("a", '{"q": "caf\\u00e9 \\u6771\\u4eac"}')], 1.0),
        ([], [], None),
    ],
)
def test_tool_calls(a: list[ToolCall], b: list[ToolCall], expected: float | None) -> None:
    result = scorer("tool_calls").score(pair(answer(None, a), answer(None, b)))
    assert value(result) == expected


def test_tool_calls_exact_twin_is_not_stolen_by_a_partial_match() -> None:
    primary = [call("f", '{"x": 1}'), call("f", '{"x": 2}')]
    target = [call("f", '{"x": 2}'), call("f", '{"x": 9}')]
    result = scorer("tool_calls").score(pair(answer(None, primary), answer(None, target)))
    assert value(result) == pytest.approx((1.0 + 0.5) / 2)
    assert isinstance(result, Verdict)
    assert result.detail == {"primary": ["f", "f"], "target": ["f", "f"]}


def test_tool_calls_are_matched_in_linear_time() -> None:
    # Quadratic when each call was looked up in a list of the others: 20 000 took 29 s.
    primary = [call("f", json.dumps({"x": i})) for i in range(50_000)]
    target = [call("f", json.dumps({"x": -i})) for i in range(50_000)]
    target[5] = call("g", "{}")
    result = finishes(
        lambda: scorer("tool_calls").score(pair(answer(None, primary), answer(None, target)))
    )
    assert isinstance(result, Verdict) and result.detail is not None
    # x=0 is an exact twin (1.0); 49 998 more "f" calls pair by name (0.5); one has no "f" left.
    assert result.score == pytest.approx((1 + 0.5 * 49_998) / 50_000)
    assert result.detail == {"primary": ["f"] * 32, "target": ["f"] * 32}
    deep = "[" * 100_000 + "]" * 100_000
    nested = scorer("tool_calls").score(
        pair(answer(None, [call("f", deep)]), answer(None, [call("f", deep)]))
    )
    assert value(nested) == 1.0  # compared as text when too deep to parse


# -- json_schema_valid -------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def schema_request(schema: Any = SCHEMA) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "who?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name": "Zoë", "age": 3}', 1.0),
        ('```json\n{"name": "A", "age": 3}\n```', 1.0),
        ('{"name": "A", "age": -1}', 0.0),
        ('{"name": "A"}', 0.0),
        ('{"name": "A", "age": 3, "x": 1}', 0.0),
        ('{"name": "A", "age": ', 0.0),
        ("", 0.0),
    ],
)
def test_json_schema_valid(text: str, expected: float) -> None:
    valid = scorer("json_schema_valid")
    assert valid.per_response
    assert value(valid.score(pair(answer("{}"), answer(text), schema_request()))) == expected


def test_json_schema_valid_detail_and_not_applicable() -> None:
    valid = scorer("json_schema_valid")
    result = valid.score(pair(answer(), answer('{"name": "A", "age": "3"}'), schema_request()))
    assert isinstance(result, Verdict)
    assert result.detail == {
        "valid": False,
        "error": "'3' is not of type 'integer'",
        "path": "$.age",
    }
    assert valid.score(pair(answer(), answer("{}"), {"messages": []})) is None
    json_object = {"response_format": {"type": "json_object"}}
    assert valid.score(pair(answer(), answer("{}"), json_object)) is None
    assert valid.score(pair(answer(), answer("{}"), None)) is None
    broken = valid.score(pair(answer(), answer("{}"), schema_request({"type": "no-such-type"})))
    assert isinstance(broken, Verdict)
    assert broken.score is None
    assert broken.detail is not None and broken.detail["reason"].startswith("invalid schema")
