"""Request shapes aiohttp's router used to see first, now that the proxy handler takes requests
directly (d06ea1d): HEAD, pipelining, HTTP/1.0, Expect in other casings and with chunked
bodies. Raw HTTP against a real shadowtap and a fake primary on loopback."""

from __future__ import annotations

import asyncio

import orjson

from tests.conftest import StartFake, StartShadowtap, make_config

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "Name a prime."}]}


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split()[1])
    if head_only:
        return status, head
    lower = head.lower()
    if b"content-length: " in lower:
        length = int(lower.partition(b"content-length: ")[2].partition(b"\r\n")[0])
        return status, await asyncio.wait_for(reader.readexactly(length), 5)
    assert b"transfer-encoding: chunked" in lower, head
    body = b""
    while True:
        size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).strip(), 16)
        chunk = await asyncio.wait_for(reader.readexactly(size + 2), 5)
        if size == 0:
            return status, body
        body += chunk[:-2]


def post(body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/" + version + b"\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def test_head_then_a_post_on_the_same_connection(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    writer.write(b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    status, head = await read_answer(reader, head_only=True)
    assert status in (200, 404, 405), head
    writer.write(post(orjson.dumps(CHAT)))
    await writer.drain()
    status, body = await read_answer(reader)
    writer.close()
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"


async def test_pipelined_requests_are_answered_in_order(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    bodies = [orjson.dumps({**CHAT, "user": f"u{i}"}) for i in range(3)]
    writer.write(b"".join(post(b) for b in bodies))
    await writer.drain()
    for _ in bodies:
        status, body = await read_answer(reader)
        assert status == 200, body
    writer.close()
    assert [r.body for r in primary.chat_requests()] == bodies


async def test_http10_with_expect_sends_its_body_without_waiting(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    writer.write(post(orjson.dumps(CHAT), b"Expect: 100-continue\r\n", b"1.0"))
    await writer.drain()
    status, body = await read_answer(reader)
    writer.close()
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"


async def test_expect_in_other_casing_with_a_chunked_body(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary))
    body = orjson.dumps(CHAT)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"EXPECT: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(hex(len(body))[2:].encode() + b"\r\n" + body + b"\r\n0\r\n\r\n")
    await writer.drain()
    status, answer = await read_answer(reader)
    writer.close()
    assert status == 200 and orjson.loads(answer)["object"] == "chat.completion"
    assert primary.chat_requests()[0].body == body


async def test_a_refused_expect_client_that_sends_its_body_anyway_smuggles_nothing(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    config = make_config(primary, server={"max_body_bytes": 1000, "shutdown_grace_s": 1.0})
    server = await start_shadowtap(config)
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    body = hidden + b"x" * (2000 - len(hidden))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 2000\r\n\r\n"
    )
    await writer.drain()
    status, _ = await read_answer(reader)
    assert status == 413
    writer.write(body)  # the body a client may send after waiting in vain for the go-ahead
    writer.write(post(orjson.dumps(CHAT)))  # and then its next request
    await writer.drain()
    status, answer = await read_answer(reader)
    writer.close()
    # The refused body was read as that body and dropped, never parsed as a request.
    assert status == 200 and orjson.loads(answer)["object"] == "chat.completion"
    assert [r.path_qs for r in primary.received] == ["/v1/chat/completions"]


async def test_absolute_form_target_goes_to_the_primary_path(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(make_config(primary))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    body = orjson.dumps(CHAT)
    writer.write(
        b"POST http://evil.example/v1/chat/completions?x=1 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    await writer.drain()
    status, answer = await read_answer(reader)
    writer.close()
    assert status == 200, answer
    assert [r.path_qs for r in primary.received] == ["/v1/chat/completions?x=1"]
