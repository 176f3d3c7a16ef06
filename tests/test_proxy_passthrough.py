"""The primary path: what the client sees through shadowtap equals what the primary sent."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import drain

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "What is six times seven?"}]}
# Headers whose value legitimately differs between two responses of the same server.
VOLATILE = {"date", "server"}


async def raw(url: str, body: bytes | None, method: str = "POST", **headers: str):
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(method, url, data=body, headers=headers) as response:
            chunks = [chunk async for chunk in response.content.iter_any()]
            stable = {k.lower(): v for k, v in response.headers.items()}
            return response.status, stable, b"".join(chunks), chunks


def proxy_url(server, path: str = "/v1/chat/completions") -> str:
    return f"http://127.0.0.1:{server.proxy_port}{path}"


async def test_json_and_sse_bodies_are_byte_identical(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake("drip", delay_s=0.01)
    candidate = await start_fake("paraphrase")
    server = await start_shadowtap(make_config(primary, {"cand": candidate}))
    for stream in (False, True):
        body = orjson.dumps({**CHAT, "stream": stream})
        direct = await raw(primary.url + "/v1/chat/completions", body)
        proxied = await raw(proxy_url(server), body, **{"Content-Type": "application/json"})
        assert proxied[0] == direct[0] == 200
        assert proxied[2] == direct[2]
        for name in set(direct[1]) - VOLATILE - {"content-length", "transfer-encoding"}:
            assert proxied[1][name] == direct[1][name], name
        if stream:
            # chunk by chunk, not buffered: the dripping primary's events arrive separately
            assert proxied[1]["content-type"].startswith("text/event-stream")
            assert len(proxied[3]) > 3
    await drain(server)  # the shadows have answered (no guess at how long they take)
    assert len(candidate.chat_requests()) == 2


async def test_openai_client_sees_the_primary_answer(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    candidate = await start_fake("paraphrase")
    server = await start_shadowtap(make_config(primary, {"cand": candidate}))
    via = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="sk-client")
    direct = openai.AsyncOpenAI(base_url=primary.url + "/v1", api_key="sk-client")
    got = await via.chat.completions.create(**CHAT)
    want = await direct.chat.completions.create(**CHAT)
    assert got.model_dump() == want.model_dump()
    got_stream = [
        c.model_dump() async for c in await via.chat.completions.create(**CHAT, stream=True)
    ]
    want_stream = [
        c.model_dump() async for c in await direct.chat.completions.create(**CHAT, stream=True)
    ]
    assert got_stream == want_stream and len(got_stream) > 3
    assert "paraphrase" not in str(got_stream)  # the candidate's answer never leaks back
    await via.close()
    await direct.close()


async def test_non_chat_routes_pass_through_unmirrored(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    candidate = await start_fake()
    server = await start_shadowtap(make_config(primary, {"cand": candidate}))
    client = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="sk-client")
    models = await client.models.list()
    assert [m.id for m in models.data] == ["fake"]
    status, _, body, _ = await raw(proxy_url(server, "/v1/unknown?x=1&y=%20z"), None, "GET")
    assert status == 404 and b"no such route" in body
    assert primary.received[-1].path_qs == "/v1/unknown?x=1&y=%20z"
    await drain(server)  # a shadow sent by mistake would be awaited here, so it is seen
    assert candidate.received == []
    await client.close()


async def test_malformed_json_reaches_primary_and_is_not_mirrored(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    candidate = await start_fake()
    registry = CollectorRegistry()
    server = await start_shadowtap(make_config(primary, {"cand": candidate}), registry)
    status, _, body, _ = await raw(proxy_url(server), b'{"model": "x", "messages": [')
    assert status == 400
    assert orjson.loads(body)["error"]["message"].startswith("We could not parse")
    assert primary.received[-1].body == b'{"model": "x", "messages": ['
    await drain(server)  # a shadow sent by mistake would be awaited here, so it is seen
    assert candidate.received == []
    labels = {"route": "/v1/chat/completions", "outcome": "invalid_json"}
    assert registry.get_sample_value("shadowtap_sampling_decisions_total", labels) == 1


async def test_a_request_not_drawn_is_forwarded_unparsed(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """Sampling draws before it parses: a request the draw passes over is never parsed, so a
    broken body there counts as "not_sampled" (only a parse could call it "invalid_json")
    and reaches the primary byte for byte."""
    primary = await start_fake()
    candidate = await start_fake()
    registry = CollectorRegistry()
    server = await start_shadowtap(
        make_config(primary, {"cand": candidate}, sampling={"rate": 0.0}), registry
    )
    broken = b'{"model": "x", "messages": ['
    status, _, body, _ = await raw(proxy_url(server), broken)
    direct = await raw(primary.url + "/v1/chat/completions", broken)
    assert (status, body) == (direct[0], direct[2]) and status == 400
    assert primary.received[-1].body == broken
    await drain(server)
    assert candidate.received == []
    for outcome, count in (("not_sampled", 1), ("invalid_json", None)):
        labels = {"route": "/v1/chat/completions", "outcome": outcome}
        assert registry.get_sample_value("shadowtap_sampling_decisions_total", labels) == count


async def test_a_header_keyed_draw_decides_before_any_parse_and_the_same_key_alike(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """With `sampling.key = "header:..."` the draw needs no body: a session the draw passes
    over is "not_sampled" whether its body parses or not; one it chooses is sampled when its
    body is an object and "invalid_json" when it is broken. Same key, same draw."""
    primary, candidate = await start_fake(), await start_fake()
    registry = CollectorRegistry()
    sampling = {"rate": 0.5, "key": "header:X-Session"}
    config = make_config(primary, {"cand": candidate}, sampling=sampling)
    server = await start_shadowtap(config, registry)
    sessions = [f"session-{i}" for i in range(40)]
    for session in sessions:
        await raw(proxy_url(server), orjson.dumps(CHAT), **{"X-Session": session})
        await raw(proxy_url(server), b'{"model": "x", "messages": [', **{"X-Session": session})
    await drain(server)

    def count(outcome: str) -> float:
        labels = {"route": "/v1/chat/completions", "outcome": outcome}
        return registry.get_sample_value("shadowtap_sampling_decisions_total", labels) or 0.0

    sampled, broken, passed_over = count("sampled"), count("invalid_json"), count("not_sampled")
    assert sampled == broken and 0 < sampled < len(sessions)  # each drawn session: both
    assert passed_over == 2 * (len(sessions) - sampled)  # each other one: both, unparsed
    assert len(candidate.chat_requests()) == sampled


async def test_a_gzip_encoded_request_reaches_the_primary_as_sent(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """The client's body is relayed as it was sent: aiohttp's server used to decode a
    gzip-encoded request, and the proxy sent the decoded bytes (cut at the client's
    Content-Length) still labelled gzip, which the primary could not read."""
    primary = await start_fake()
    candidate = await start_fake()
    server = await start_shadowtap(make_config(primary, {"cand": candidate}))
    plain = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "y" * 3000}]})
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    direct = await raw(primary.url + "/v1/chat/completions", gzip.compress(plain), **headers)
    proxied = await raw(proxy_url(server), gzip.compress(plain), **headers)
    assert direct[0] == 200
    assert (proxied[0], proxied[2]) == (direct[0], direct[2])
    assert primary.received[-1].headers["Content-Encoding"] == "gzip"
    assert primary.received[-1].body == plain  # decoded by the primary, once
    await drain(server)
    assert candidate.received == []  # an encoded body is not parsed, so never shadowed


async def test_headers_hop_by_hop_removed_forwarded_for_appended(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary))
    await raw(
        proxy_url(server),
        orjson.dumps(CHAT),
        **{
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "secret-hop",
            "Proxy-Authorization": "Basic abc",
            "X-Forwarded-For": "203.0.113.9",
            "Authorization": "Bearer sk-client",
            "X-Custom": "kept",
        },
    )
    seen = {k.lower(): v for k, v in primary.received[-1].headers.items()}
    assert "x-private-hop" not in seen and "proxy-authorization" not in seen
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["authorization"] == "Bearer sk-client"  # the primary is the client's provider
    assert seen["x-custom"] == "kept"
    assert seen["host"] == primary.url.removeprefix("http://")


async def test_upstream_errors_pass_through_unchanged(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake("error500")
    server = await start_shadowtap(make_config(primary))
    direct = await raw(primary.url + "/v1/chat/completions", orjson.dumps(CHAT))
    proxied = await raw(proxy_url(server), orjson.dumps(CHAT))
    assert proxied[0] == direct[0] == 500 and proxied[2] == direct[2]


async def test_unreachable_primary_is_a_502_in_openai_error_shape(
    start_shadowtap: StartShadowtap,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await start_shadowtap(make_config(f"http://127.0.0.1:{port}"))
    status, headers, body, _ = await raw(proxy_url(server), orjson.dumps(CHAT))
    assert status == 502 and headers["content-type"].startswith("application/json")
    error = orjson.loads(body)["error"]
    assert error["code"] == "upstream_unreachable" and error["type"] == "proxy_error"
    client = openai.AsyncOpenAI(
        base_url=proxy_url(server, "/v1"), api_key="sk-client", max_retries=0
    )
    try:
        await client.chat.completions.create(**CHAT)
        raise AssertionError("expected an error")
    except openai.InternalServerError as error:
        assert error.status_code == 502
    await client.close()


async def test_oversize_bodies_get_413(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary, server={"max_body_bytes": 1000}))
    big = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]})
    status, _, body, _ = await raw(proxy_url(server), big)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "request_too_large"

    async def chunked():  # no Content-Length: the cap must hold while reading
        for _ in range(20):
            yield b"x" * 100

    async with aiohttp.ClientSession() as session:
        async with session.post(proxy_url(server), data=chunked()) as response:
            assert response.status == 413
    assert primary.received == []
    ok = await raw(proxy_url(server), orjson.dumps(CHAT))
    assert ok[0] == 200


async def test_client_disconnect_cancels_the_upstream_request(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake("drip", delay_s=0.3)
    server = await start_shadowtap(make_config(primary, sampling={"rate": 0.0}))
    body = orjson.dumps({**CHAT, "stream": True})
    async with aiohttp.ClientSession() as session:
        response = await session.post(proxy_url(server), data=body)
        await response.content.readany()  # the first event arrived; now hang up
        response.close()
    for _ in range(50):
        if primary.disconnects:
            break
        await asyncio.sleep(0.1)
    assert primary.disconnects == 1


async def test_cookies_an_upstream_sets_never_reach_another_request(
    aiohttp_server: Any, start_shadowtap: StartShadowtap
) -> None:
    """Providers set cookies (Cloudflare's `__cf_bm` on api.openai.com): the client gets them,
    and neither the primary's pool nor the shadows' keeps them for the next request, whoever
    sends it. (aiohttp's default cookie jar did, for any upstream named by a host name.)"""
    cookies: dict[str, list[list[str]]] = {"primary": [], "cand": []}

    def upstream(name: str) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            cookies[name].append(request.headers.getall("Cookie", []))
            body = orjson.dumps(
                {"object": "chat.completion", "choices": [{"message": {"content": "42"}}]}
            )
            response = web.Response(body=body, content_type="application/json")
            response.headers["Set-Cookie"] = f"__cf_bm={name}-secret; Path=/; HttpOnly"
            return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", answer)
        return app

    primary, candidate = (
        await aiohttp_server(upstream("primary")),
        await aiohttp_server(upstream("cand")),
    )
    # `localhost`, not an IP address: aiohttp's cookie jar keeps no cookie from an IP.
    config = make_config(
        f"http://localhost:{primary.port}", {"cand": f"http://localhost:{candidate.port}"}
    )
    server = await start_shadowtap(config)
    body = orjson.dumps(CHAT)
    status, headers, _, _ = await raw(proxy_url(server), body)
    assert status == 200 and headers["set-cookie"] == "__cf_bm=primary-secret; Path=/; HttpOnly"
    await drain(server)
    status, _, _, _ = await raw(proxy_url(server), body, Cookie="mine=1")
    await drain(server)
    assert status == 200
    assert cookies["primary"] == [[], ["mine=1"]]  # the client's own, as it sent it
    assert cookies["cand"] == [[], []]


@pytest.mark.parametrize("level", ["debug", "info"])
async def test_each_request_is_logged_at_debug_level_only(
    level: str, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """The handler asks once, at start, whether its per-request line is wanted."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper()))
    )
    try:
        primary = await start_fake()
        server = await start_shadowtap(make_config(primary, sampling={"rate": 0.0}))
        with structlog.testing.capture_logs() as logs:
            status, _, _, _ = await raw(proxy_url(server), orjson.dumps(CHAT))
    finally:
        structlog.reset_defaults()
    assert status == 200
    lines = [event for event in logs if event["event"] == "request"]
    if level == "info":
        assert lines == []
        return
    assert lines == [
        {
            "event": "request",
            "log_level": "debug",
            "method": "POST",
            "path": "/v1/chat/completions",
            "status": 200,
            "latency_ms": lines[0]["latency_ms"],
            "sampled": False,
        }
    ]


async def test_a_head_request_goes_through_aiohttps_client_and_keeps_its_length(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """llhttp cannot be told an answer to HEAD has no body: aiohttp's client relays HEAD."""
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary))
    url = f"http://127.0.0.1:{server.proxy_port}/v1/models"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as got:
            body = await got.read()
        async with session.head(url) as head:
            assert head.status == 200
            assert head.headers["Content-Length"] == str(len(body))
            assert await head.read() == b""
        async with session.get(url) as again:  # the connection after a HEAD is sound
            assert await again.read() == body
    assert [r.method for r in primary.received] == ["GET", "HEAD", "GET"]
