"""The primary's own HTTP/1.1 client (shadowtap.upstream) against odd and hostile answer heads:
a raw primary on loopback writes exact bytes, a client asks through the real proxy. What a valid
head carries reaches the client as sent; a broken head is the proxy's own 502, and the proxy
goes on serving."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import StartShadowtap
from tests.hostile_primary import Seen, fetch, framed, proxy, replies, running

# On uvloop too: `shadowtap serve` runs there, and its transports differ from asyncio's.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])

OK = framed(b'{"ok": true}', b"Content-Type: application/json")


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTZ/1.1 200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ],
)
async def test_a_garbage_head_is_a_502_and_the_proxy_goes_on(
    garbage: bytes, start_shadowtap: StartShadowtap
) -> None:
    async with running(replies(garbage, OK)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        assert got.status == 502 and b"upstream_unreachable" in got.body
        assert b"UpstreamProtocolError" in got.body
        again = await fetch(port)
        assert (again.status, again.body) == (200, b'{"ok": true}')


async def test_an_http_1_0_answer_is_relayed_and_its_connection_not_kept(
    start_shadowtap: StartShadowtap,
) -> None:
    answer = b"HTTP/1.0 201 Created\r\nContent-Length: 5\r\nX-Old: yes\r\n\r\nhello"
    async with running(replies(answer)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        for _ in range(2):
            got = await fetch(port)
            assert (got.status, got.reason, got.body) == (201, "Created", b"hello")
            assert got.headers["X-Old"] == "yes"
        assert primary.accepts == 2  # HTTP/1.0 without keep-alive: a connection each


async def test_an_http_1_0_answer_with_no_length_is_read_to_the_close(
    start_shadowtap: StartShadowtap,
) -> None:
    answer = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"y" * 300_000
    async with running(replies(answer, close=True)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        assert (got.status, got.cut, got.body) == (200, False, b"y" * 300_000)


async def test_a_head_over_64_kib_is_a_502_and_the_proxy_goes_on(
    start_shadowtap: StartShadowtap,
) -> None:
    fields = [b"X-Pad-%d: %s" % (i, b"p" * 1000) for i in range(80)]
    async with running(replies(framed(b"big", *fields), OK)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        assert got.status == 502 and b"UpstreamProtocolError" in got.body
        assert (await fetch(port)).status == 200


@pytest.mark.parametrize(
    "endless",
    [
        b"HTTP/1.1 200 OK\r\nX-Endless: ",  # one header value that never ends
        b"HTTP/1.1 200 ",  # a reason phrase that never ends
        b"HTTP/1.1 200 OK\r\nX-",  # a header name that never ends
    ],
)
async def test_a_head_that_never_ends_is_refused_once_past_64_kib_not_buffered_to_the_deadline(
    endless: bytes, start_shadowtap: StartShadowtap
) -> None:
    """llhttp hands a field over in pieces and httptools joins them until the field ends: a
    head growing for ever was buffered whole until the deadline (memory without bound), then
    called a timeout. It must be refused as broken as soon as it is over the limit."""
    stop = asyncio.Event()

    async def endless_head(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(endless)
        for _ in range(256):  # 4 MiB, then a stall: the proxy has had enough to decide
            writer.write(b"a" * 16384)
            await writer.drain()
        await stop.wait()

    async with running(endless_head) as primary:
        port = await proxy(start_shadowtap, primary.url, timeout_s=10)
        try:
            got = await fetch(port)
        finally:
            stop.set()
        assert got.status == 502 and b"UpstreamProtocolError" in got.body


async def test_a_utf_8_header_value_reaches_the_client_byte_for_byte_and_invalid_bytes_harm_none(
    start_shadowtap: StartShadowtap,
) -> None:
    """Field values are decoded as UTF-8 (surrogate-escaped), so UTF-8 goes back out as sent.
    Bytes that are not UTF-8 cannot: aiohttp's server writer leaves escaped bytes out of what
    it sends (as it did behind aiohttp's own client); the answer itself is unharmed."""
    answer = framed(
        b"ok", "X-Name: Zoë 東京".encode(), b"X-Raw: \xff\xfe-bytes", status=b"200 \xc3\xa7a va"
    )
    async with running(replies(answer)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        for _ in range(2):
            got = await fetch(port)
            assert (got.status, got.body, got.cut) == (200, b"ok", False)
            assert got.headers["X-Name"].encode("utf-8", "surrogateescape") == "Zoë 東京".encode()
            assert got.headers["X-Raw"].endswith("-bytes")
            assert got.reason == "ça va"
        assert primary.accepts == 1


async def test_two_set_cookie_headers_are_kept_in_order_and_the_reason_as_sent(
    start_shadowtap: StartShadowtap,
) -> None:
    answer = framed(
        b"slow down",
        b"Set-Cookie: a=1; Path=/",
        b"Retry-After: 3",
        b"Set-Cookie: b=2; HttpOnly",
        status=b"429 Too Many Requests, Slow Down",
    )
    async with running(replies(answer)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        assert (got.status, got.reason, got.body) == (
            429,
            "Too Many Requests, Slow Down",
            b"slow down",
        )
        assert got.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_204_and_304_carry_no_body_and_the_connection_is_kept(
    status: bytes, start_shadowtap: StartShadowtap
) -> None:
    answer = b"HTTP/1.1 " + status + b'\r\nETag: "v1"\r\n\r\n'
    async with running(replies(answer)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        for _ in range(3):
            got = await fetch(port, method="GET", body=b"")
            assert (got.status, got.body, got.cut) == (int(status[:3]), b"", False)
            assert got.headers["ETag"] == '"v1"'
        assert primary.accepts == 1


async def test_interim_100_continue_answers_are_skipped_for_the_real_one(
    start_shadowtap: StartShadowtap,
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    async with running(replies(interim + OK)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        for _ in range(2):
            got = await fetch(port)
            assert (got.status, got.body) == (200, b'{"ok": true}')
            assert "Link" not in got.headers  # an interim answer's fields are not the answer's
        assert primary.accepts == 1


async def test_a_101_nobody_asked_for_is_a_502_and_the_proxy_goes_on(
    start_shadowtap: StartShadowtap, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrades never take this path (aiohttp's client relays them), so a 101 is a broken
    answer. httptools reports it with an exception of its own, not an HttpParserError: it
    escaped `data_received`, asyncio logged a fatal error, the 502 blamed a closed socket."""
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    async with running(replies(upgrade, OK)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        assert got.status == 502 and b"UpstreamProtocolError" in got.body
        assert (await fetch(port)).status == 200
    assert "Fatal error" not in caplog.text
