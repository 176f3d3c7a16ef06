"""The primary's own HTTP/1.1 client against odd and hostile body framing: lengths that lie,
bodies cut by a close, bodies ended by a close, broken and trailing chunks, bytes nobody asked
for. A raw primary on loopback writes exact bytes; a client asks through the real proxy. The
client never gets a silently shortened answer, nor another request's answer."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict
from shadowtap.upstream import Origin, UpstreamPool, UpstreamProtocolError

from tests.conftest import StartShadowtap
from tests.hostile_primary import Seen, fetch, framed, proxy, replies, running
from tests.waiting import eventually

# On uvloop too: `shadowtap serve` runs there, and its transports differ from asyncio's.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])

FIRST, SECOND = framed(b"first"), framed(b"second")


@pytest.mark.parametrize("promised", [1000, 1_000_000])  # relayed whole / streamed
async def test_a_body_cut_short_by_a_close_never_reaches_the_client_as_a_short_200(
    promised: int, start_shadowtap: StartShadowtap
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % promised
    async with running(replies(head + b"x" * 500, close=True)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        if got.status == 200:  # the head was relayed before the cut: the answer is cut too
            assert got.cut and len(got.body) < promised
        else:  # the whole-body path had sent nothing yet: the proxy's own 502
            assert got.status == 502 and b"UpstreamClosed" in got.body


async def test_a_close_delimited_body_is_relayed_whole_and_its_connection_not_kept(
    start_shadowtap: StartShadowtap,
) -> None:
    body = bytes(range(256)) * 2000  # 512,000 bytes, over the pause threshold
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + body
    async with running(replies(answer, close=True)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        for _ in range(2):
            got = await fetch(port)
            assert (got.status, got.cut, got.body) == (200, False, body)
        assert primary.accepts == 2


async def test_a_bad_chunk_size_cuts_the_answer_and_the_proxy_goes_on(
    start_shadowtap: StartShadowtap,
) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nno\r\n"
    async with running(replies(chunked, FIRST)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        assert got.status == 502 or (got.status == 200 and got.cut)
        assert (await fetch(port)).body == b"first"


@pytest.mark.parametrize(
    "trailer", [b"X-Checksum: abc", b"Content-Type: text/html", b"Set-Cookie: session=injected"]
)
async def test_a_chunked_bodys_trailers_are_never_merged_into_the_answers_head(
    trailer: bytes, start_shadowtap: StartShadowtap
) -> None:
    """httptools reports trailer fields with `on_header`, as it does the head's: they were
    added to the answer's headers, and when they arrived before the head was relayed (one
    segment) the client got them as header fields: a trailing Content-Type retyped the body,
    a trailing Set-Cookie set a cookie (RFC 9110 6.5.1: a trailer field is never merged into
    the head unless its definition says how)."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n" + trailer + b"\r\n\r\n"
    )
    async with running(replies(chunked)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        for _ in range(3):
            got = await fetch(port)
            assert (got.status, got.cut, got.body) == (200, False, b"hello world")
            assert trailer.decode() not in [f"{k}: {v}" for k, v in got.headers.items()]
        assert primary.accepts == 1


@pytest.mark.parametrize(
    "extra", [b"garbage after the body", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"]
)
async def test_bytes_past_the_content_length_end_the_connection_and_the_next_gets_its_own(
    extra: bytes, start_shadowtap: StartShadowtap
) -> None:
    async with running(replies(FIRST + extra, SECOND, framed(b"third"))) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        assert (got.status, got.body) == (200, b"first")
        await eventually(lambda: primary.ended == [0])  # not kept: the proxy closed it
        assert (await fetch(port)).body == b"second"
        assert (await fetch(port)).body == b"third"
        assert [seen.connection for seen in primary.seen] == [0, 1, 1]


async def test_an_unsolicited_answer_while_idle_closes_the_connection(
    start_shadowtap: StartShadowtap,
) -> None:
    answered = asyncio.Event()
    unsolicited = asyncio.Event()

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        if len(primary.seen) == 1:
            writer.write(FIRST)
            await answered.wait()  # the client has the first answer: the connection is idle
            writer.write(framed(b"nobody asked"))
            unsolicited.set()
        else:
            writer.write(framed(b"second"))

    async with running(answer) as primary:
        port = await proxy(start_shadowtap, primary.url)
        assert (await fetch(port)).body == b"first"
        answered.set()
        await unsolicited.wait()
        await eventually(lambda: primary.ended == [0])
        got = await fetch(port)
        assert (got.status, got.body) == (200, b"second")
        assert primary.seen[-1].connection == 1


async def test_a_content_length_and_chunked_together_are_refused(
    start_shadowtap: StartShadowtap,
) -> None:
    """Both framings at once is how responses are smuggled: llhttp refuses it, as it should."""
    both = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    async with running(replies(both, FIRST)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        got = await fetch(port)
        assert got.status == 502 and b"UpstreamProtocolError" in got.body
        assert (await fetch(port)).body == b"first"


@pytest.mark.parametrize(
    "endless",
    [
        b"2\r\nhi\r\n0\r\nX-Trailer: ",  # a trailer value that never ends
        b"2\r\nhi\r\n0\r\nX-",  # a trailer name that never ends
        b"2\r\nhi\r\n5;ext=",  # a chunk extension that never ends
    ],
)
async def test_chunk_framing_or_trailers_that_never_end_are_refused_past_64_kib(
    endless: bytes,
) -> None:
    """httptools joins a trailer field's pieces until it ends (as it does a head's): fed for
    ever, it was buffered whole until the deadline. Bytes that carry no body byte are
    bounded as the head is: past 64 KiB the answer is refused as broken."""
    stop = asyncio.Event()

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + endless)
        for _ in range(256):  # 4 MiB, then a stall: the proxy has had enough to decide
            writer.write(b"a" * 16384)
            await writer.drain()
        await stop.wait()

    async with running(answer) as primary:
        pool = UpstreamPool(Origin.of(primary.url))
        try:
            upstream = await pool.request("GET", "/", CIMultiDict(), b"", timeout_s=10)
            assert await upstream.next_chunk() == b"hi"
            with pytest.raises(UpstreamProtocolError):
                await upstream.read()
            upstream.release()
        finally:
            stop.set()
            await pool.close()
