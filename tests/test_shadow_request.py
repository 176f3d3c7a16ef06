"""What each shadow target is sent: the client's bytes, a rewritten model, or the request in
the target's API, at its path, with its key in its API's header; or no request at all."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from shadowtap.dialects import RenderOptions, Untranslatable
from shadowtap.shadow_request import (
    ShadowBodies,
    ShadowTarget,
    Spliced,
    shadow_headers,
    shadow_path,
    splice_model,
)

from tests.examples import examples

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "user": "u-1"}
BODY = orjson.dumps(CHAT)


def target(**fields: object) -> ShadowTarget:
    return ShadowTarget("c", "candidate", "http://c", 5.0, 1.0, **fields)  # type: ignore[arg-type]


def test_a_target_on_the_routes_api_gets_the_clients_bytes_or_only_the_model_replaced() -> None:
    bodies = ShadowBodies(BODY, CHAT, "openai-chat")
    assert bodies.for_target(target()) is BODY
    assert bodies.for_target(target(dialect="openai-chat")) is BODY
    assert orjson.loads(bytes(bodies.for_target(target(model="small")))) == {
        **CHAT,
        "model": "small",
    }


def test_a_target_on_another_api_gets_the_question_in_its_api() -> None:
    claude = target(dialect="anthropic-messages", model="claude-x", render=RenderOptions(99))
    sent = orjson.loads(ShadowBodies(BODY, CHAT, "openai-chat").for_target(claude))
    assert sent == {
        "model": "claude-x",
        "max_tokens": 99,
        "messages": [{"role": "user", "content": "Hi"}],
    }


@pytest.mark.parametrize(
    ("request_json", "route", "reason"),
    [
        ({**CHAT, "n": 2}, "openai-chat", "field 'n' has no faithful translation"),
        ({**CHAT, "logprobs": True}, "openai-chat", "field 'logprobs' has no faithful translation"),
        (CHAT, None, "the route's API is not known (see sampling.route_dialects)"),
    ],
)
def test_what_cannot_be_asked_alike_is_refused_with_a_reason(
    request_json: dict, route: str | None, reason: str
) -> None:
    bodies = ShadowBodies(orjson.dumps(request_json), request_json, route)
    with pytest.raises(Untranslatable) as refused:
        bodies.for_target(target(dialect="anthropic-messages"))
    assert str(refused.value) == reason


def test_an_anthropic_beta_header_keeps_the_request_in_its_api() -> None:
    messages = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    bodies = ShadowBodies(
        orjson.dumps(messages), messages, "anthropic-messages", ["anthropic-beta"]
    )
    with pytest.raises(Untranslatable, match="anthropic-beta"):
        bodies.for_target(target(dialect="openai-chat"))
    assert bodies.for_target(target()) == orjson.dumps(messages)  # the same API: as sent


def test_token_ids_go_to_another_embedding_model_only_with_the_same_tokenizer() -> None:
    tokens = {"model": "text-embedding-3-small", "input": [[1, 2, 3]]}
    bodies = ShadowBodies(orjson.dumps(tokens), tokens, "openai-embeddings")
    with pytest.raises(Untranslatable, match="tokenizer"):
        bodies.for_target(target(model="other-embedder"))
    vouched = target(model="text-embedding-3-large", same_tokenizer=True)
    assert orjson.loads(bytes(bodies.for_target(vouched)))["model"] == "text-embedding-3-large"
    text = {"model": "text-embedding-3-small", "input": ["a"]}
    assert ShadowBodies(orjson.dumps(text), text, "openai-embeddings").for_target(
        target(model="other-embedder")
    )


def test_the_path_is_the_clients_unless_the_target_speaks_or_serves_elsewhere() -> None:
    path_qs = "/v1/chat/completions?api-version=1&api_key=sk-secret"
    allowed = frozenset({"api-version"})
    assert shadow_path(path_qs, "openai-chat", target(forward_query=allowed)) == (
        "/v1/chat/completions?api-version=1"
    )
    claude = target(dialect="anthropic-messages", forward_query=allowed)
    assert shadow_path(path_qs, "openai-chat", claude) == "/v1/messages?api-version=1"
    gateway = target(dialect="openai-responses", path="/gw/responses")
    assert shadow_path(path_qs, "openai-chat", gateway) == "/gw/responses"
    assert shadow_path("/llm/chat", "openai-chat", target(dialect="openai-chat")) == "/llm/chat"


def test_each_api_gets_the_targets_key_its_own_way_and_never_the_clients() -> None:
    client = CIMultiDictProxy(
        CIMultiDict(
            {"Authorization": "Bearer sk-client", "Content-Type": "application/json"}.items()
        )
    )
    claude = target(dialect="anthropic-messages", api_key="sk-ant-target")
    assert dict(shadow_headers(client, claude, "openai-chat")) == {
        "anthropic-version": "2023-06-01",
        "Content-Type": "application/json",
        "x-api-key": "sk-ant-target",
    }
    same = target(api_key="sk-target")
    assert shadow_headers(client, same, "openai-chat")["Authorization"] == "Bearer sk-target"
    # An Anthropic route's same-API candidate: its key as Anthropic takes it.
    on_messages = shadow_headers(client, same, "anthropic-messages")
    assert on_messages["x-api-key"] == "sk-target" and "Authorization" not in on_messages


# -- the model rewritten in the client's bytes -------------------------------------------------
_keys = st.sampled_from(["model", "messages", "mod\\u0065l", "x", "", 'a"b', "model "])
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["model", "k", "m\\"]), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.dictionaries(_keys, _json, max_size=6),
    st.sampled_from([None, 2, "\t"]),
    st.booleans(),
    st.text(max_size=10),
)
def test_the_model_is_replaced_in_the_clients_bytes_whatever_their_shape(
    request_json: dict[str, Any], indent: int | str | None, ascii_only: bool, model: str
) -> None:
    """Any JSON object, however laid out (indented, escaped, `model` first, last, nested,
    absent, spelled with an escape), gets exactly its top-level `model` replaced."""
    body = json.dumps(request_json, indent=indent, ensure_ascii=ascii_only).replace(
        "mod\\\\u0065l",
        "mod\\u0065l",  # a key written with an escape, as a client may
    )
    raw = body.encode()
    expected = {**orjson.loads(raw), "model": model}
    spliced = splice_model(raw, model)
    assert spliced is not None
    assert orjson.loads(bytes(spliced)) == expected
    assert orjson.loads(bytes(ShadowBodies(raw, None).for_model(model))) == expected


def test_a_rewritten_body_holds_the_clients_bytes_not_a_copy() -> None:
    prompt = {"messages": [{"role": "user", "content": "x" * 1_000_000}], "model": "gpt-4o"}
    body = orjson.dumps(prompt)
    sent = ShadowBodies(body, None).for_target(target(model="small"))
    assert isinstance(sent, Spliced)
    views = [part for part in sent.parts if isinstance(part, memoryview)]
    assert all(view.obj is body for view in views)  # views of the client's bytes
    assert sum(len(part) for part in sent.parts if part not in views) < 100  # + the new value
    assert orjson.loads(bytes(sent)) == {**prompt, "model": "small"}
    assert len(sent) == len(bytes(sent))


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'{"model": "a"', b'{"model": "a"} {}', b'"model"', b""],
    ids=["array", "unclosed", "trailing", "string", "empty"],
)
def test_bytes_that_are_not_one_json_object_are_not_spliced(body: bytes) -> None:
    assert splice_model(body, "small") is None


def on_a_short_stack(call: Callable[[], Any]) -> Any:
    """`call` made as close to the interpreter's recursion limit as it runs at all: the walk of
    the client's bytes (which recurses into nested values) then gives up on a body nested 11
    deep, as it does for one nested past the stack (~1000), which orjson reads (1024 levels)
    but cannot write (255), so no real body reaches the re-encoding with a model."""
    deepest = _frames_left()
    for room in range(1, 100):
        try:
            return _frames_down(deepest - room, call)
        except RecursionError:  # not even `call`'s own frames fit: a frame more
            continue
    raise AssertionError("never ran")


def _frames_left(depth: int = 0) -> int:
    try:
        return _frames_left(depth + 1)
    except RecursionError:
        return depth


def _frames_down(depth: int, call: Callable[[], Any]) -> Any:
    return call() if depth <= 0 else _frames_down(depth - 1, call)


def test_a_body_the_walk_cannot_read_is_parsed_and_encoded_again_instead() -> None:
    request_json = {"model": "gpt-4o", "messages": [{"role": "user", "content": [[[["x"]]]]}]}
    body = orjson.dumps({**request_json, "tree": [[[[[[[[[[[]]]]]]]]]]]})
    assert splice_model(body, "small") is not None
    deep = b'{"model": "gpt-4o", "tree": ' + b"[" * 1015 + b"]" * 1015 + b"}"
    assert isinstance(orjson.loads(deep), dict)  # orjson reads 1024 levels; the walk does not
    assert splice_model(deep, "small") is None
    sent = on_a_short_stack(lambda: ShadowBodies(body, None).for_model("small"))
    assert isinstance(sent, bytes)
    assert orjson.loads(sent) == {**orjson.loads(body), "model": "small"}


# -- attacks on the splice: whatever bytes orjson reads as an object, the candidate reads the same
# request with only `model` changed ------------------------------------------------------------
_KEY_SPELLINGS = [
    '"model"',
    '"mod\\u0065l"',
    '"\\u006dodel"',
    '"\\u006D\\u006F\\u0064\\u0065\\u006C"',
    '"model "',
    '"Model"',
    '"mo\\"del"',
    '"\\"model\\""',
    '"messages"',
    '"x"',
]
_LITERALS = [
    "1E+2",
    "-0.0e-5",
    "12345678901234567890123",
    '"\\ud83d\\ude00"',
    '"model"',
    '"\\"model\\": 1, "',
    '{"model": {"model": []}}',
    "[]",
    "null",
    "true",
]
_SPACE = st.text(alphabet=" \t\r\n", max_size=2)


@st.composite
def _object_bytes(draw: st.DrawFn) -> bytes:
    """An object with duplicate, escaped and look-alike keys, any value (nested objects that
    hold `model`, strings that spell it), and whitespace wherever JSON allows it."""
    members = []
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(_KEY_SPELLINGS))
        literal = draw(st.sampled_from(_LITERALS))
        value = literal if draw(st.booleans()) else json.dumps(draw(_json))
        members.append(f"{draw(_SPACE)}{key}{draw(_SPACE)}:{draw(_SPACE)}{value}{draw(_SPACE)}")
    return f"{draw(_SPACE)}{{{','.join(members)}{draw(_SPACE)}}}{draw(_SPACE)}".encode()


def _assert_only_the_model_changes(body: bytes, model: str) -> None:
    try:
        request_json = orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # never sampled: the primary alone gets it
    if not isinstance(request_json, dict):
        return
    expected = {**request_json, "model": model}
    spliced = splice_model(body, model)
    if spliced is not None:
        assert orjson.loads(bytes(spliced)) == expected
        # Another parser reads it the same (its integers of any size: the client's digits are
        # sent as they came, where re-encoding made 10**22 a float).
        assert json.loads(bytes(spliced)) == {**json.loads(body), "model": model}
    assert orjson.loads(bytes(ShadowBodies(body, None).for_model(model))) == expected


@settings(max_examples=examples(400), deadline=None)
@given(_object_bytes(), st.text(max_size=6))
def test_duplicate_escaped_and_look_alike_keys_only_the_top_level_model_changes(
    body: bytes, model: str
) -> None:
    _assert_only_the_model_changes(body, model)
    assert splice_model(body, model) is not None  # all of these are read by the scan


@settings(max_examples=examples(400), deadline=None)
@given(
    _object_bytes(),
    st.integers(0, 10_000),
    st.binary(min_size=1, max_size=3) | st.sampled_from([b'"', b"\\", b"{", b"}", b",", b":"]),
)
def test_any_bytes_orjson_reads_as_an_object_splice_to_the_same_request(
    body: bytes, at: int, inserted: bytes
) -> None:
    """Bytes inserted anywhere (a quote, a backslash, a brace, invalid UTF-8): if the result is
    still an object to orjson, the candidate reads that object with only `model` changed."""
    at %= len(body) + 1
    _assert_only_the_model_changes(body[:at] + inserted + body[at:], "small")


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"model": "a"}',  # a UTF-8 BOM: orjson refuses it, so it is never sampled
        b'{"model": "a", "x": NaN}',
        b'{"model": "a", "x": 1e400}',
        b'{"model": "a", "x": "\\ud800"}',  # a lone surrogate
        b'{"model": "a", "x": "\xff"}',  # invalid UTF-8
        b'{"model": "a",}',
        b'{"model": "a"} garbage',
        b'{"m\\ud800": "a"}',  # a key the scan decodes: never raises, even for bytes never sampled
    ],
    ids=[
        "bom",
        "nan",
        "infinity",
        "lone-surrogate",
        "bad-utf8",
        "trailing-comma",
        "garbage",
        "key",
    ],
)
def test_bodies_orjson_refuses_never_break_the_splice(body: bytes) -> None:
    _assert_only_the_model_changes(body, "small")
    splice_model(body, "small")  # whatever it returns, it does not raise


def test_a_body_re_encoded_for_its_model_is_charged_once_and_a_spliced_one_never() -> None:
    """The copy re-encoded when the scan gives up is real memory: charged when made, once per
    model; the client's bytes around a new value are not charged at all."""
    charged: list[int] = []
    small = ShadowBodies(BODY, None, charge=charged.append)
    assert isinstance(small.for_target(target(model="small")), Spliced)
    assert small.for_target(target()) is BODY
    assert charged == []
    nested = {"model": "gpt-4o", "input": [[[[[[[[[[["a"]]]]]]]]]]]}
    bodies = ShadowBodies(orjson.dumps(nested), None, charge=charged.append)
    sent = on_a_short_stack(lambda: bodies.for_target(target(model="small")))
    assert isinstance(sent, bytes) and charged == [len(sent)]
    bodies.for_target(target(model="small"))
    assert charged == [len(sent)]  # one copy, however many targets share it
