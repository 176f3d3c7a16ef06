"""proxy/headers.py: which headers cross the proxy, in which direction, and what is a secret."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy
from shadowtap.headers import (
    ShadowHeaders,
    downstream_response_headers,
    header_credentials,
    shadow_request_headers,
    stored_header_names,
    upstream_request_headers,
)


def frozen(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_upstream_drops_hop_by_hop_and_connection_named_headers() -> None:
    headers = frozen(
        ("Host", "proxy:8080"),
        ("Content-Length", "12"),
        ("Connection", "keep-alive, X-Private-Hop"),
        ("X-Private-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Authorization", "Bearer sk-x"),
        ("X-Custom", "kept"),
    )
    out = upstream_request_headers(headers, "10.0.0.9")
    assert dict(out) == {
        "Authorization": "Bearer sk-x",
        "X-Custom": "kept",
        "X-Forwarded-For": "10.0.0.9",
    }


def test_forwarded_for_is_appended_not_replaced() -> None:
    out = upstream_request_headers(frozen(("X-Forwarded-For", "1.2.3.4")), "10.0.0.9")
    assert out["X-Forwarded-For"] == "1.2.3.4, 10.0.0.9"
    assert "X-Forwarded-For" not in upstream_request_headers(frozen(), None)


def test_downstream_keeps_content_length_and_drops_hop_by_hop() -> None:
    headers = frozen(
        ("Content-Length", "5"), ("Keep-Alive", "timeout=5"), ("Content-Type", "application/json")
    )
    assert dict(downstream_response_headers(headers)) == {
        "Content-Length": "5",
        "Content-Type": "application/json",
    }


def test_shadows_get_no_client_identity_unless_configured() -> None:
    client = frozen(
        ("Authorization", "Bearer sk-client"),
        ("x-api-key", "ant-client"),
        ("Cookie", "s=1"),
        ("OpenAI-Organization", "org-1"),
        ("Content-Type", "application/json"),
        ("X-Tenant", "acme"),
    )
    auth = {"Authorization": "Bearer sk-candidate"}
    plain = shadow_request_headers(client, auth, {"X-Team": "evals"}, False)
    assert dict(plain) == {
        "Content-Type": "application/json",
        "X-Team": "evals",
        "Authorization": "Bearer sk-candidate",
    }
    forwarded = shadow_request_headers(client, {}, {}, True)
    assert forwarded["Authorization"] == "Bearer sk-client"
    assert forwarded["x-api-key"] == "ant-client" and "X-Tenant" not in forwarded


def test_a_translated_shadow_gets_its_own_api_headers_not_the_clients() -> None:
    client = frozen(
        ("Authorization", "Bearer sk-client-openai"),
        ("OpenAI-Beta", "assistants=v2"),
        ("anthropic-version", "2023-01-01"),
        ("Content-Type", "application/json"),
    )
    anthropic = {"anthropic-version": "2023-06-01"}
    translated = shadow_request_headers(
        client, {"x-api-key": "sk-ant-candidate"}, {}, False, defaults=anthropic, same_dialect=False
    )
    assert dict(translated) == {
        "anthropic-version": "2023-06-01",
        "Content-Type": "application/json",
        "x-api-key": "sk-ant-candidate",
    }
    # The same API: the client's version is what its request was written against.
    same = shadow_request_headers(client, {}, {}, False, defaults=anthropic)
    assert same.getall("anthropic-version") == ["2023-01-01"] and same["OpenAI-Beta"]


def test_header_credentials_are_whole_values_and_their_token_parts() -> None:
    headers = frozen(
        ("Authorization", "Bearer sk-CANARY-123456"),
        ("x-api-key", "ant-key-1"),
        ("Cookie", "session=abcdef123; theme=dark"),
        ("Content-Type", "application/json"),
        ("api-key", "abc"),  # too short to be a key, and scrubbing it would mangle text
    )
    assert header_credentials(headers) == [
        "Bearer sk-CANARY-123456",
        "sk-CANARY-123456",
        "ant-key-1",
        "session=abcdef123; theme=dark",
        "abcdef123",
    ]


def test_the_key_headers_of_gemini_and_azure_api_management_are_credentials() -> None:
    # Either key, echoed by a primary in its answer, must be scrubbed from what is stored.
    headers = frozen(
        ("x-goog-api-key", "AIzaSyCANARY-gemini-key"),
        ("Ocp-Apim-Subscription-Key", "0123456789abcdef0123456789abcdef"),
    )
    assert header_credentials(headers) == [
        "AIzaSyCANARY-gemini-key",
        "0123456789abcdef0123456789abcdef",
    ]


def test_stored_header_names_are_allow_listed_and_lower_case() -> None:
    names = ["Content-Type", "Authorization", "X-Stainless-Lang", "Cookie", "content-type"]
    assert stored_header_names(names) == ["content-type", "x-stainless-lang"]


def test_a_targets_own_headers_win_over_the_clients_and_its_apis_defaults() -> None:
    client = frozen(
        ("anthropic-version", "2023-01-01"),
        ("Content-Type", "application/json"),
        ("accept", "text/plain"),
        ("Authorization", "Bearer sk-client-0000"),
    )
    plan = ShadowHeaders(
        {"x-api-key": "sk-ant-target"},
        {"Anthropic-Version": "2024-10-22", "X-API-KEY": "stale-key", "Accept": "application/json"},
        False,
        defaults={"anthropic-version": "2023-06-01"},
    )
    for _ in range(2):  # one plan serves every request: what one adds never reaches the next
        headers = plan.build(client)
        assert headers.getall("anthropic-version") == ["2024-10-22"]
        assert headers.getall("x-api-key") == ["sk-ant-target"]
        assert headers.getall("accept") == ["application/json"]
        assert "Authorization" not in headers
        assert headers["Content-Type"] == "application/json"
        headers["Content-Length"] = "12"
    assert "Content-Length" not in plan.build(frozen())
