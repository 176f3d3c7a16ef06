"""The proxy answers a client's `Expect: 100-continue` itself and holds the whole body before
it forwards: the expectation is not passed on. Forwarded, it made aiohttp's client withhold
the body from the primary until the primary sent its own `100 Continue`, so a primary (or a
load balancer before it) that does not send one never got the body: the request stalled until
one side timed out. A raw primary on loopback that waits for the body and never sends 100."""

from __future__ import annotations

import asyncio

import orjson

from tests.conftest import StartShadowtap, make_config

ANSWER = orjson.dumps({"id": "x", "object": "chat.completion", "choices": []})


class NoContinuePrimary:
    """Reads a head and its Content-Length body (giving up after 3 s) and answers 200, or 408
    when the body never came; never sends `100 Continue`."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.bodies: list[bytes | None] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
        try:
            self.bodies.append(await asyncio.wait_for(reader.readexactly(length), 3))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(ANSWER)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + ANSWER
            )
        except TimeoutError:
            self.bodies.append(None)
            writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_the_expectation_is_not_forwarded_to_the_primary(
    start_shadowtap: StartShadowtap,
) -> None:
    primary = NoContinuePrimary()
    upstream = await asyncio.start_server(primary.handle, "127.0.0.1", 0)
    try:
        port = upstream.sockets[0].getsockname()[1]
        server = await start_shadowtap(
            make_config(f"http://127.0.0.1:{port}", sampling={"rate": 0.0})
        )
        body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # the proxy's own go-ahead
        writer.write(body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        upstream.close()
        await upstream.wait_closed()
    assert primary.bodies == [body]
    assert b"expect" not in primary.heads[0].lower()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(ANSWER)
