"""Review of the answer reader's session changes: chunks popped as they are decoded, the buffer
parsed itself (no bytes() copy), and a turn or a read counted without the pace's lock when
nothing is owed. Attacked with 1-byte chunks, gzip, answers at exactly the cap and one byte
over, a reader cancelled while it pops, and several readers of one target at once, some of
them cancelled mid-read. Pushed copies as forward_primary hands them over, and pulled answers
from a real aiohttp upstream on loopback."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import MemoryBudget, Pace
from shadowtap.completion import Completion
from shadowtap.upstream import AiohttpAnswer

MiB = 1024 * 1024
UNLIMITED = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0)


def sse(words: list[str]) -> bytes:
    events = []
    for word in words:
        delta = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        events.append(b"data: " + orjson.dumps(delta) + b"\n\n")
    done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    events.append(b"data: " + orjson.dumps(done) + b"\n\ndata: [DONE]\n\n")
    return b"".join(events)


def whole(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    return orjson.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})


def json_of_size(size: int) -> bytes:
    body = whole("")
    return whole("a" * (size - len(body)))


async def pushed(
    body: bytes,
    *,
    chunk: int,
    content_type: str = "application/json",
    encoding: str = "",
    limit: int = MiB,
    pace: Pace = UNLIMITED,
    memory: MemoryBudget | None = None,
) -> tuple[Completion, AnswerReader]:
    hold = memory.admit(0) if memory is not None else None
    reader = AnswerReader("primary", pace, AnswerLimits(limit), hold)
    reader.begin(200, content_type, encoding)
    for start in range(0, len(body), chunk):
        reader.feed(body[start : start + chunk])
    reader.finish()
    return await reader.completion(), reader


@pytest.mark.parametrize("encoding", ["", "gzip"])
async def test_answers_relayed_a_byte_at_a_time_read_as_whole_ones(encoding: str) -> None:
    words = [f"w{i} é😀 " for i in range(200)]
    for body, kind in ((sse(words), "text/event-stream"), (whole("".join(words)), "json")):
        wire = gzip.compress(body) if encoding else body
        memory = MemoryBudget(16 * MiB)
        completion, reader = await pushed(
            wire, chunk=1, content_type=kind, encoding=encoding, memory=memory
        )
        assert completion.ok, completion.error
        assert completion.text == "".join(words)
        assert reader.decoded == len(body)


@pytest.mark.parametrize("encoding", ["", "gzip"])
async def test_an_answer_of_exactly_the_cap_is_whole_and_one_byte_over_is_cut(
    encoding: str,
) -> None:
    limit = 64 * 1024
    for size, cut in ((limit, None), (limit + 1, "size")):
        body = json_of_size(size)
        assert len(body) == size
        wire = gzip.compress(body) if encoding else body
        completion, reader = await pushed(wire, chunk=4096, encoding=encoding, limit=limit)
        assert reader.cut == cut, size
        assert completion.ok == (cut is None), completion.error


async def upstream(aiohttp_server: Any, body: bytes, *, chunk: int, headers: dict[str, str]) -> str:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        for start in range(0, len(body), chunk):
            await response.write(body[start : start + chunk])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1/chat/completions"))


async def test_a_gzip_stream_pulled_a_byte_at_a_time_is_read_whole(aiohttp_server: Any) -> None:
    words = [f"w{i} " for i in range(300)]
    url = await upstream(
        aiohttp_server,
        gzip.compress(sse(words)),
        chunk=1,
        headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
    )
    reader = AnswerReader("small", Pace(0, 0, 0.5), AnswerLimits(MiB))
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={}, auto_decompress=False) as response,
    ):
        await reader.read(AiohttpAnswer(response))
    completion = await reader.completion()
    assert completion.ok and completion.text == "".join(words)


async def test_a_reader_cancelled_while_it_pops_gives_back_every_byte_and_the_turn() -> None:
    # A pace with a small loop share makes the reader wait for its turn between chunks: the
    # cancellation lands while half the relayed copy is popped and half is not.
    memory = MemoryBudget(64 * MiB)
    hold = memory.admit(0)
    assert hold is not None
    pace = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0.001)
    reader = AnswerReader("primary", pace, AnswerLimits(8 * MiB), hold)
    reader.begin(200, "text/event-stream", "")
    body = sse([f"word{i} " for i in range(40_000)])
    for start in range(0, len(body), 16 * 1024):
        reader.feed(body[start : start + 16 * 1024])
    reader.finish()
    task = asyncio.ensure_future(reader.completion())
    for _ in range(200):
        await asyncio.sleep(0.001)
        if reader.decoded:
            break
    assert 0 < reader.decoded < len(body)  # mid-way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reader.abandon()  # as normalize_primary does on cancellation
    assert memory.held == 0
    assert not pace._lock.locked()  # the next reader of this target is not blocked
    other, _ = await pushed(sse(["after"]), chunk=7, content_type="text/event-stream")
    fresh = AnswerReader("primary", pace, AnswerLimits(MiB))
    fresh.begin(200, "text/event-stream", "")
    fresh.feed(sse(["next"]))
    fresh.finish()
    assert other.text == "after"
    assert (await asyncio.wait_for(fresh.completion(), 60)).text == "next"


async def test_several_streams_of_one_target_at_once_some_cancelled(aiohttp_server: Any) -> None:
    words = [f"t{i} " for i in range(3_000)]
    body = sse(words)
    url = await upstream(
        aiohttp_server, body, chunk=97, headers={"Content-Type": "text/event-stream"}
    )
    pace = Pace(bytes_per_second=2 * MiB, burst_bytes=256 * 1024, loop_share=0.2)
    memory = MemoryBudget(256 * MiB)
    readers: list[AnswerReader] = []

    async def one(session: aiohttp.ClientSession) -> Completion:
        hold = memory.admit(0)
        assert hold is not None
        reader = AnswerReader("small", pace, AnswerLimits(4 * MiB), hold)
        readers.append(reader)
        try:
            async with session.post(url, json={}, auto_decompress=False) as response:
                await reader.read(AiohttpAnswer(response))
            return await reader.completion()
        except BaseException:
            reader.abandon()
            raise
        finally:
            hold.close()

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.ensure_future(one(session)) for _ in range(12)]
        await asyncio.sleep(0.05)
        for task in tasks[::3]:
            task.cancel()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
    finished = [c for c in done if isinstance(c, Completion)]
    cancelled = [c for c in done if isinstance(c, asyncio.CancelledError)]
    assert len(finished) + len(cancelled) == 12 and len(finished) >= 8
    for completion in finished:
        assert completion.ok and completion.text == "".join(words)
    assert not pace._lock.locked()
    assert memory.held == 0
