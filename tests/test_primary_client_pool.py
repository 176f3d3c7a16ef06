"""The primary's own HTTP/1.1 client keeps connections alive, and only as long as it may: one
connection for sequential requests, none kept that the primary closes or says it will close,
none kept idle past `keepalive_s`; a request the primary dropped unanswered on a kept
connection is retried once, and only when sending it twice is harmless. A raw primary on
loopback counts connections and requests; the pool is our own code, run for real."""

from __future__ import annotations

import asyncio
import math

import pytest
from multidict import CIMultiDict
from shadowtap.upstream import Origin, UpstreamClosed, UpstreamPool, UpstreamUnreachable
from shadowtap.upstream.pool import announced_keepalive_s

from tests.conftest import StartShadowtap
from tests.hostile_primary import Answer, Seen, fetch, framed, proxy, replies, running
from tests.waiting import eventually

# On uvloop too: `shadowtap serve` runs there, and its transports differ from asyncio's.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])


async def test_sequential_requests_share_one_connection(start_shadowtap: StartShadowtap) -> None:
    async with running(replies(framed(b"ok"))) as primary:
        port = await proxy(start_shadowtap, primary.url)
        for method in ("POST", "GET", "PUT", "DELETE", "POST", "OPTIONS", "PATCH", "POST"):
            got = await fetch(port, method=method)
            assert (got.status, got.body) == (200, b"ok")
        assert primary.accepts == 1 and len(primary.seen) == 8


@pytest.mark.parametrize("concurrent", [False, True])
async def test_a_primary_that_closes_after_every_answer_unannounced_loses_no_request(
    concurrent: bool, start_shadowtap: StartShadowtap
) -> None:
    """No `Connection: close`, yet the primary hangs up after each answer: no request fails,
    POSTs included (they are never retried, so none may be sent on a connection seen closed)."""

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(framed(b"reply to " + seen.body))
        await writer.drain()
        writer.close()

    async with running(answer) as primary:
        port = await proxy(start_shadowtap, primary.url)
        if concurrent:
            gots = await asyncio.gather(*(fetch(port, body=b"%d" % i) for i in range(20)))
        else:
            gots = [await fetch(port, body=b"%d" % i) for i in range(20)]
        assert [(got.status, got.body) for got in gots] == [
            (200, b"reply to %d" % i) for i in range(20)
        ]
        assert primary.accepts == len(primary.seen) == 20


async def test_connection_close_is_honoured(start_shadowtap: StartShadowtap) -> None:
    answer = framed(b"bye", b"Connection: close")  # said, but the primary keeps the socket open
    async with running(replies(answer)) as primary:
        port = await proxy(start_shadowtap, primary.url)
        for _ in range(3):
            got = await fetch(port)
            assert (got.status, got.body) == (200, b"bye")
        await eventually(lambda: sorted(primary.ended) == [0, 1, 2])  # the proxy closed each
        assert primary.accepts == 3


async def test_an_idle_connection_is_closed_after_keepalive_s_and_a_new_one_opened() -> None:
    async with running(replies(framed(b"ok"))) as primary:
        pool = UpstreamPool(Origin.of(primary.url), keepalive_s=0.2)
        try:
            for expected in ([0], [0, 1]):
                answer = await pool.request("GET", "/v1/models", CIMultiDict(), b"", 10)
                assert (answer.status, await answer.read()) == (200, b"ok")
                answer.release()
                await eventually(lambda expected=expected: primary.ended == expected)
            assert primary.accepts == 2
        finally:
            await pool.close()


async def test_pool_close_closes_its_idle_connections() -> None:
    async with running(replies(framed(b"ok"))) as primary:
        pool = UpstreamPool(Origin.of(primary.url))
        answer = await pool.request("POST", "/v1/x", CIMultiDict(), b"{}", 10)
        assert await answer.read() == b"ok"
        answer.release()
        await pool.close()
        await eventually(lambda: primary.ended == [0])


def drops(numbers: set[int], answer: bytes = framed(b"ok")) -> Answer:
    """Answers every request but the n-th ones (counted from 0), on which it hangs up."""

    async def maybe(seen: Seen, writer: asyncio.StreamWriter) -> None:
        if seen.index in numbers:
            writer.close()
        else:
            writer.write(answer)

    return maybe


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_an_idempotent_request_dropped_on_a_kept_connection_is_retried_once(
    method: str, start_shadowtap: StartShadowtap
) -> None:
    async with running(drops({1})) as primary:
        port = await proxy(start_shadowtap, primary.url)
        assert (await fetch(port, method=method)).status == 200
        got = await fetch(port, method=method, body=b"second")
        assert (got.status, got.body) == (200, b"ok")
        assert [seen.connection for seen in primary.seen] == [0, 0, 1]  # sent again, once


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_non_idempotent_request_is_never_sent_twice(
    method: str, start_shadowtap: StartShadowtap
) -> None:
    async with running(drops({1})) as primary:
        port = await proxy(start_shadowtap, primary.url)
        assert (await fetch(port, method=method)).status == 200
        got = await fetch(port, method=method, body=b"second")
        assert got.status == 502 and b"UpstreamClosed" in got.body
        assert [seen.body for seen in primary.seen].count(b"second") == 1
        assert (await fetch(port, method=method)).status == 200  # and the proxy goes on


async def test_a_retry_is_made_once_only_and_never_on_a_new_connection() -> None:
    async with running(drops({1, 2, 3})) as primary:
        pool = UpstreamPool(Origin.of(primary.url))
        try:
            answer = await pool.request("GET", "/", CIMultiDict(), b"", 10)
            assert await answer.read() == b"ok"
            answer.release()
            with pytest.raises(UpstreamClosed):  # dropped on the kept one, then on a new one
                await pool.request("GET", "/", CIMultiDict(), b"", 10)
            with pytest.raises(UpstreamClosed):  # dropped on a new connection: not retried
                await pool.request("GET", "/", CIMultiDict(), b"", 10)
            assert [seen.connection for seen in primary.seen] == [0, 0, 1, 2]
        finally:
            await pool.close()


async def test_new_connections_resolve_the_host_once_per_dns_ttl() -> None:
    """A burst of new connections makes one DNS lookup (aiohttp's session cached 300 s)."""
    async with running(replies(framed(b"ok"), close=True)) as primary:
        url = primary.url.replace("127.0.0.1", "localhost")
        pool = UpstreamPool(Origin.of(url))
        try:
            for _ in range(3):  # each answer closes its connection: three connections
                answer = await pool.request("GET", "/", CIMultiDict(), b"", 10)
                assert await answer.read() == b"ok"
                answer.release()
            assert primary.accepts == 3 and pool.lookups == 1
        finally:
            await pool.close()


async def test_an_address_that_refuses_is_looked_up_again_next_time() -> None:
    async with running(replies(framed(b"ok"))) as primary:
        port = primary.url.rsplit(":", 1)[1]
    pool = UpstreamPool(Origin.of(f"http://localhost:{port}"))  # the primary is gone
    try:
        for lookups in (1, 2):
            with pytest.raises(UpstreamUnreachable):
                await pool.request("GET", "/", CIMultiDict(), b"", 10)
            assert pool.lookups == lookups
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("announced", "kept_s"),
    [
        ("timeout=5, max=100", 4.0),
        ("max=100, TIMEOUT = 7", 6.0),
        ("timeout=1", 0.0),
        ("max=3", math.inf),
        ("timeout=soon", math.inf),
        ("timeout=nan", math.inf),
        ("", math.inf),
    ],
)
async def test_an_announced_keep_alive_timeout_is_kept_a_second_short(
    announced: str, kept_s: float
) -> None:
    assert announced_keepalive_s(announced) == kept_s


async def test_a_connection_is_not_reused_past_the_keep_alive_timeout_its_answer_announced() -> (
    None
):
    """An upstream saying `Keep-Alive: timeout=N` closes idle connections after N seconds: a
    request sent on one just then would be lost (a POST is never retried), so none is."""
    async with running(replies(framed(b"ok", b"Keep-Alive: timeout=1.3"))) as primary:
        pool = UpstreamPool(Origin.of(primary.url))  # keepalive_s 15: the answer says less
        try:
            for pause_s in (0.0, 0.0, 0.5):
                await asyncio.sleep(pause_s)
                answer = await pool.request("POST", "/", CIMultiDict(), b"{}", 10)
                assert await answer.read() == b"ok"
                answer.release()
            assert [seen.connection for seen in primary.seen] == [0, 0, 1]
        finally:
            await pool.close()


async def test_an_answer_announcing_a_second_or_less_leaves_its_connection_closed() -> None:
    async with running(replies(framed(b"ok", b"Keep-Alive: timeout=1"))) as primary:
        pool = UpstreamPool(Origin.of(primary.url))
        try:
            for _ in range(2):
                answer = await pool.request("POST", "/", CIMultiDict(), b"{}", 10)
                assert await answer.read() == b"ok"
                answer.release()
            assert [seen.connection for seen in primary.seen] == [0, 1]
        finally:
            await pool.close()
