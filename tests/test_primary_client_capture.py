"""A sampled request (the primary's answer captured on the side) through each way the primary's
own HTTP/1.1 client can fail: the client gets the proxy's 502/504 or a cut answer, the exchange
reaches the pipeline with the primary's side marked failed (never a crash in the handler), and
the candidate's side is unharmed. A raw primary on loopback, a real fake candidate."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.hostile_primary import Answer, Seen, fetch, replies, running
from tests.shadowing import CHAT, RecordingSink, drain

# On uvloop too: `shadowtap serve` runs there, and its transports differ from asyncio's.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])

CUT = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
CHUNK = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)


def stalls_after(data: bytes) -> Answer:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await asyncio.sleep(3600)

    return answer


FAILURES: dict[str, tuple[Answer | None, str, str]] = {
    # name: (the primary's answer (None: no primary at all), what the client sees, the error)
    "refused": (None, "502", "primary failed: ConnectionRefusedError"),
    "garbage head": (replies(b"HTTP/9 nope\r\n\r\n"), "502", "UpstreamProtocolError"),
    "a 101": (replies(b"HTTP/1.1 101 Go\r\nUpgrade: x\r\n\r\n"), "502", "UpstreamProtocolError"),
    "head over 64 KiB": (
        replies(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n"),
        "502",
        "UpstreamProtocolError",
    ),
    "length cut by a close": (
        replies(b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n{", close=True),
        "502",
        "UpstreamClosed",
    ),
    "stream cut by a close": (replies(CUT + CHUNK, close=True), "cut", "UpstreamClosed"),
    "bad chunk mid-stream": (replies(CUT + CHUNK + b"QQ\r\n"), "cut", "UpstreamProtocolError"),
    "no head in time": (stalls_after(b""), "504", "primary timed out"),
    "stalled mid-stream": (stalls_after(CUT + CHUNK), "cut", "primary timed out"),
}


@pytest.mark.parametrize("name", list(FAILURES))
async def test_a_sampled_request_through_a_failing_primary_is_recorded_as_failed(
    name: str, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    answer, client_sees, error = FAILURES[name]
    candidate = await start_fake()
    async with running(answer or replies(b"")) as primary:
        url = primary.url
        if answer is None:
            await primary.stop()  # its port is closed now: nobody listens there
        config = make_config(url, {"cand": candidate})
        config["primary"]["timeout_s"] = 1
        server = await start_shadowtap(config)
        seen: list[Any] = []
        server.handler.pipeline.sinks.append(RecordingSink(seen))
        got = await fetch(server.proxy_port, body=orjson.dumps({**CHAT, "stream": True}))
        await drain(server)
    assert (str(got.status) if not got.cut else "cut") == client_sees
    (exchange,) = seen
    assert not exchange.primary.ok and error in (exchange.primary.error or "")
    assert exchange.results["cand"].completion.ok  # the candidate's side: unharmed
    assert len(candidate.chat_requests()) == 1


@pytest.mark.parametrize("name", list(FAILURES))
async def test_a_candidate_failing_the_same_ways_never_touches_the_primarys_answer(
    name: str, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """Live shadows go through the same client (their own pools): a hostile candidate is
    recorded as failed, and the client gets the primary's answer, byte for byte."""
    answer = FAILURES[name][0]
    primary = await start_fake()
    async with running(answer or replies(b"")) as candidate:
        url = candidate.url
        if answer is None:
            await candidate.stop()
        config = make_config(primary, {"cand": {"url": url, "timeout_s": 1}})
        server = await start_shadowtap(config)
        seen: list[Any] = []
        server.handler.pipeline.sinks.append(RecordingSink(seen))
        body = orjson.dumps({**CHAT, "stream": True})
        got = await fetch(server.proxy_port, body=body)
        direct = await fetch(int(primary.url.rsplit(":", 1)[1]), body=body)
        await drain(server)
    assert (got.status, got.cut, got.body) == (200, False, direct.body)
    (exchange,) = seen
    assert exchange.primary.ok
    assert not exchange.results["cand"].completion.ok
    assert exchange.results["cand"].completion.error
