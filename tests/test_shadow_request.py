"""What each shadow target is sent: the client's bytes, a rewritten model, or the request in
the target's API, at its path, with its key in its API's header; or no request at all."""

from __future__ import annotations

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from shadowtap.dialects import RenderOptions, Untranslatable
from shadowtap.shadow_request import (
    ShadowBodies,
    ShadowTarget,
    shadow_headers,
    shadow_path,
)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "user": "u-1"}
BODY = orjson.dumps(CHAT)


def target(**fields: object) -> ShadowTarget:
    return ShadowTarget("c", "candidate", "http://c", 5.0, 1.0, **fields)  # type: ignore[arg-type]


def test_a_target_on_the_routes_api_gets_the_clients_bytes_or_only_the_model_replaced() -> None:
    bodies = ShadowBodies(BODY, CHAT, "openai-chat")
    assert bodies.for_target(target()) is BODY
    assert bodies.for_target(target(dialect="openai-chat")) is BODY
    assert orjson.loads(bodies.for_target(target(model="small"))) == {**CHAT, "model": "small"}


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
    assert orjson.loads(bodies.for_target(vouched))["model"] == "text-embedding-3-large"
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
