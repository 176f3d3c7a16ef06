"""Odd and hostile request shapes: forwarded faithfully, never a 500, never leaking credentials."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap.exchange import Exchange
from shadowtap.urls import origin_form, query_credentials, shadow_target

from tests.conftest import StartFake, StartShadowtap, make_config

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "Name a prime."}]}


class Sink:
    def __init__(self) -> None:
        self.seen: list[Exchange] = []

    def record(self, exchange: Exchange) -> bool:
        self.seen.append(exchange)
        return True


async def drain(server: Any) -> None:
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)


async def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_empty_body_is_forwarded_as_the_sdk_sends_it(
    aiohttp_server: Any, start_shadowtap: StartShadowtap
) -> None:
    # The official SDK's body-less POSTs (batches.cancel) carry Content-Length: 0.
    received: list[tuple[str, bytes]] = []

    async def cancel(request: web.Request) -> web.Response:
        received.append((request.path, await request.read()))
        batch_id = request.match_info["batch_id"]
        return web.json_response(
            {
                "id": batch_id,
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file-1",
                "completion_window": "24h",
                "status": "cancelling",
                "created_at": 1_700_000_000,
            }
        )

    app = web.Application()
    app.router.add_post("/v1/batches/{batch_id}/cancel", cancel)
    primary = await aiohttp_server(app)
    server = await start_shadowtap(make_config(str(primary.make_url("")).rstrip("/")))
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.proxy_port}/v1", api_key="sk-client", max_retries=0
    )
    batch = await client.batches.cancel("batch_abc")
    assert batch.status == "cancelling" and batch.id == "batch_abc"
    assert received == [("/v1/batches/batch_abc/cancel", b"")]
    status, _ = await raw_request(
        server.proxy_port,
        b"POST /v1/batches/b2/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 200 and received[-1] == ("/v1/batches/b2/cancel", b"")


async def test_deeply_nested_body_reaches_the_primary_and_leaks_no_budget(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    config = make_config(
        primary, {"c": {"url": candidate.url, "model": "other"}}, sampling={"max_inflight": 4}
    )
    registry = CollectorRegistry()
    server = await start_shadowtap(config, registry)
    sink = Sink()
    server.handler.pipeline.sinks.append(sink)
    # orjson reads up to 1024 levels of nesting but writes at most 255; past the interpreter's
    # stack (1000) the model rewrite cannot walk the client's bytes, so it must encode again
    tree = b"[" * 1015 + b'"deep"' + b"]" * 1015
    body = orjson.dumps(CHAT)[:-1] + b',"metadata":{"tree":' + tree + b"}}"
    async with aiohttp.ClientSession() as session:
        for _ in range(10):  # more than max_inflight: a leaked budget would shed the last ones
            url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
            async with session.post(url, data=body) as response:
                assert response.status == 200
                assert (await response.json())["object"] == "chat.completion"
        await drain(server)
        assert len(primary.chat_requests()) == 10
        assert candidate.chat_requests() == []
        assert server.handler.budget.inflight == 0
        async with session.post(url, json=CHAT) as response:
            assert response.status == 200
    await drain(server)
    assert len(candidate.chat_requests()) == 1  # the budget is whole again
    skipped = sink.seen[0].results["c"].completion
    assert skipped.error is not None and skipped.error.startswith("not sent:")
    outcome = {"target": "c", "outcome": "skipped"}
    assert registry.get_sample_value("shadowtap_shadow_requests_total", outcome) == 10


async def test_a_body_too_deep_to_encode_again_reaches_a_rewriting_candidate(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """The model is replaced in the client's bytes: a body nested deeper than orjson writes
    (255) is no longer skipped for a candidate that sets its model."""
    primary, candidate = await start_fake(), await start_fake()
    server = await start_shadowtap(
        make_config(primary, {"c": {"url": candidate.url, "model": "o"}})
    )
    tree = b"[" * 600 + b'"deep"' + b"]" * 600
    body = orjson.dumps(CHAT)[:-1] + b',"metadata":{"tree":' + tree + b"}}"
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
        async with session.post(url, data=body) as response:
            assert response.status == 200
    await drain(server)
    assert primary.chat_requests()[0].body == body
    assert candidate.chat_requests()[0].body == body.replace(b'"gpt-test"', b'"o"', 1)


async def test_query_credentials_never_reach_candidates(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, plain, allowed = await start_fake(), await start_fake(), await start_fake()
    candidates = {
        "plain": {"url": plain.url, "forward_client_auth": False},
        "allowed": {"url": allowed.url, "forward_query": ["api-version"]},
    }
    server = await start_shadowtap(make_config(primary, candidates))
    sink = Sink()
    server.handler.pipeline.sinks.append(sink)
    query = "?api-version=2024-06-01&api_key=sk-QUERY-canary-42&x=1"
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions{query}"
        async with session.post(url, json=CHAT) as response:
            assert response.status == 200
    await drain(server)
    assert primary.chat_requests()[0].path_qs == "/v1/chat/completions" + query
    assert plain.chat_requests()[0].path_qs == "/v1/chat/completions"
    assert allowed.chat_requests()[0].path_qs == "/v1/chat/completions?api-version=2024-06-01"
    assert sink.seen[0].credentials == ("sk-QUERY-canary-42",)


async def test_absolute_form_targets_go_to_the_configured_primary(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary))
    body = orjson.dumps(CHAT)
    head = (
        b"POST http://evil.example:8443/v1/chat/completions?x=1 HTTP/1.1\r\n"
        b"Host: evil.example\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    status, answer = await raw_request(server.proxy_port, head, body)
    assert status == 200 and orjson.loads(answer)["object"] == "chat.completion"
    received = primary.chat_requests()[0]
    assert received.path_qs == "/v1/chat/completions?x=1"
    assert received.headers["Host"] == primary.url.removeprefix("http://")
    status, answer = await raw_request(
        server.proxy_port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 400  # never forwarded: `*` names no path (origin_form)
    assert len(primary.received) == 1


async def test_expect_100_continue_is_answered_before_the_body(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """curl and many HTTP clients ask before sending a body over 1 kB and wait for the go-ahead
    (curl gives up waiting after a second, others never): the proxy answers it itself."""
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary, sampling={"rate": 0.0}))
    body = orjson.dumps(CHAT)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["object"] == "chat.completion"
    assert primary.chat_requests()[0].body == body


async def answer_without_body(port: int, head: bytes) -> tuple[int, bytes]:
    """Send a head whose body a client would send only after `100 Continue`; read the answer
    (by its Content-Length: the connection stays open for the body that never comes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(answer_head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    writer.close()
    return int(answer_head.split()[1]), body


async def test_unmet_expectations_and_oversized_bodies_are_refused_before_the_body(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    # The bodies never come: a short grace, or the stop would wait for them.
    config = make_config(primary, server={"max_body_bytes": 1000, "shutdown_grace_s": 1.0})
    server = await start_shadowtap(config)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n"
        b"Content-Length: 10\r\n\r\n"
    )
    status, answer = await answer_without_body(server.proxy_port, head)
    assert status == 417 and orjson.loads(answer)["error"]["code"] == "expectation_failed"
    # Too large by its Content-Length: refused at once, never invited to send (no 100 first).
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    status, answer = await answer_without_body(server.proxy_port, head)
    assert status == 413 and orjson.loads(answer)["error"]["code"] == "request_too_large"
    assert primary.received == []


async def test_odd_but_accepted_fields_are_kept_faithfully(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    server = await start_shadowtap(make_config(primary, {"c": candidate}))
    sink = Sink()
    server.handler.pipeline.sinks.append(sink)
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
        for extra in ({"stream": "false"}, {"model": 4}, {"model": ["a", {"b": None}]}):
            async with session.post(url, json={**CHAT, **extra}) as response:
                assert response.status == 200
    await drain(server)
    by_body = [(orjson.loads(e.request_body), e) for e in sink.seen]
    stream_text = next(e for b, e in by_body if b.get("stream") == "false")
    assert stream_text.stream is False
    models = sorted(e.model for b, e in by_body if b["model"] != "gpt-test")
    assert models == ["4", '["a",{"b":null}]']


async def test_echoed_credentials_are_not_logged(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, echoing = await start_fake(), await start_fake("reject_key")
    candidates = {"echo": {"url": echoing.url, "forward_client_auth": True}}
    server = await start_shadowtap(make_config(primary, candidates))
    sink = Sink()
    server.handler.pipeline.sinks.append(sink)
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
            headers = {"Authorization": "Bearer sk-CANARY-123456"}
            async with session.post(url, json=CHAT, headers=headers) as response:
                assert response.status == 200
        await drain(server)
    assert "sk-CANARY-123456" in (sink.seen[0].results["echo"].completion.error or "")
    assert "sk-CANARY-123456" not in repr(logs)
    shadow_log = next(e for e in logs if e["event"] == "shadow")
    assert shadow_log["failed"] is True and shadow_log["status"] == 401
    assert "sk-CANARY-123456" in sink.seen[0].credentials


def test_request_targets_reduce_to_path_and_query() -> None:
    assert origin_form("/v1/chat?a=1") == "/v1/chat?a=1"
    assert origin_form("http://h:1/v1/chat?a=%20b") == "/v1/chat?a=%20b"
    assert origin_form("HTTPS://h") == "/"
    assert origin_form("*") is None
    assert origin_form("h:443") is None
    assert origin_form("ftp://h/x") is None


def test_shadow_targets_keep_only_allowed_query_parameters() -> None:
    assert shadow_target("/v1/x?key=s&v=1&v=2", {"v"}) == "/v1/x?v=1&v=2"
    assert shadow_target("/v1/x?key=s", set()) == "/v1/x"
    assert shadow_target("/v1/x?key=s", {"v"}) == "/v1/x"
    assert shadow_target("/v1/x", {"v"}) == "/v1/x"
    assert shadow_target("/v1/x?api%2Dversion=1", {"api-version"}) == "/v1/x?api%2Dversion=1"


def test_credential_named_query_values_are_found() -> None:
    query = "api_key=sk-123456&key=AIzaXYZ123&sig=abc%2Fdef&api-version=2024-06-01&access_token=t"
    assert query_credentials(query) == ["sk-123456", "AIzaXYZ123", "abc/def"]
    assert query_credentials("") == []
