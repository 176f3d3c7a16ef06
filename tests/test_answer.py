"""AnswerReader in push mode (the primary's side copy): bounded, lazy, exact about memory."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import orjson
import pytest
from shadowtap.answer import (
    HELD_PER_CHUNK,
    SLICE_BYTES,
    AnswerLimits,
    AnswerReader,
    completion_bytes,
)
from shadowtap.budget import UNPACED, MemoryBudget, Pace
from shadowtap.dialects import DIALECTS

FIXTURES = Path(__file__).parent / "fixtures" / "dialects"
MiB = 1024 * 1024
UNLIMITED = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0)


def event(text: str) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(delta) + b"\n\n"


async def test_feeding_keeps_wire_bytes_and_parses_only_when_asked() -> None:
    memory = MemoryBudget(10 * MiB)
    hold = memory.admit(0)
    assert hold is not None
    reader = AnswerReader("primary", UNLIMITED, AnswerLimits(MiB), hold)
    reader.begin(200, "text/event-stream", "")
    chunks = [event("Hel"), event("lo"), b"data: [DONE]\n\n"]
    for chunk in chunks:
        reader.feed(chunk)
    # Nothing parsed yet: the wire bytes are held, each chunk with what keeping it costs.
    assert reader.decoded == 0
    assert memory.held == sum(len(chunk) + HELD_PER_CHUNK for chunk in chunks)
    reader.finish()
    completion = await reader.completion()
    assert completion.ok and completion.text == "Hello"
    assert completion.ttft_s is not None and 0 <= completion.ttft_s <= completion.latency_s
    assert memory.held == completion_bytes(completion)  # settled to what is kept
    hold.close()
    assert memory.held == 0


async def test_a_gzip_bomb_is_cut_at_the_cap_without_expanding_it() -> None:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = squeeze.compress(b"{" + b" " * (64 * MiB)) + squeeze.flush()  # ~65 kB
    memory = MemoryBudget(64 * MiB)
    hold = memory.admit(0)
    assert hold is not None
    reader = AnswerReader("primary", UNLIMITED, AnswerLimits(MiB), hold)
    reader.begin(200, "application/json", "gzip")
    reader.feed(bomb)
    completion = await reader.completion()
    assert reader.cut == "size" and MiB < reader.decoded <= MiB + SLICE_BYTES
    assert completion.error == f"answer cut at {MiB} bytes (max_answer_bytes)"
    assert memory.held < 2 * MiB  # the cap, not 64 MiB


async def test_an_answer_that_outgrows_the_memory_budget_is_cut() -> None:
    memory = MemoryBudget(100_000)
    hold = memory.admit(10_000)
    assert hold is not None
    reader = AnswerReader("primary", UNLIMITED, AnswerLimits(MiB), hold)
    reader.begin(200, "application/json", "")
    reader.feed(b'{"choices": [{"message": {"content": "' + b"x" * 200_000 + b'"}}]}')
    completion = await reader.completion()
    assert reader.cut == "memory"
    assert completion.error == "answer cut: shadow memory budget full (max_held_bytes)"
    assert memory.held <= 100_000


async def test_an_abandoned_answer_gives_its_bytes_back() -> None:
    memory = MemoryBudget(10 * MiB)
    hold = memory.admit(1000)
    assert hold is not None
    reader = AnswerReader("c", UNLIMITED, AnswerLimits(MiB), hold)
    reader.begin(200, "application/json", "")
    reader.feed(b"x" * 50_000)
    assert memory.held == 51_000 + HELD_PER_CHUNK
    reader.abandon()
    assert memory.held == 1000


async def test_json_values_are_counted_a_slice_at_a_time() -> None:
    reader = AnswerReader("c", UNLIMITED, AnswerLimits(4 * MiB))
    reader.begin(200, "application/json", "")
    reader.feed(b'{"choices": [' + b"{}," * 60_000 + b"{}]}")
    completion = await reader.completion()
    assert completion.error == "invalid response body: more than 50000 JSON values, not parsed"


async def test_an_unknown_encoding_is_an_error_not_garbage() -> None:
    reader = AnswerReader("c", UNLIMITED, AnswerLimits(MiB))
    reader.begin(200, "application/json", "br")
    reader.feed(b"\x8b\x00")
    completion = await reader.completion()
    assert completion.error == "cannot read a br-encoded answer" and completion.status == 200


def test_what_a_completion_keeps_counts_its_vectors() -> None:
    from array import array

    from shadowtap.completion import Completion

    plain = completion_bytes(Completion(text="hi"))
    embedded = completion_bytes(Completion(embeddings=[array("d", [0.0] * 1000)] * 2))
    assert embedded >= plain + 2 * 8000


@pytest.mark.parametrize(
    ("dialect", "name", "content_type"),
    [
        ("anthropic-messages", "tool_use.sse", "text/event-stream"),
        ("anthropic-messages", "text.json", "application/json"),
        ("openai-responses", "function_calls.sse", "text/event-stream; charset=utf-8"),
        ("openai-embeddings", "base64.json", "application/json"),
    ],
)
async def test_an_answer_is_read_in_its_dialect(dialect: str, name: str, content_type: str) -> None:
    body = (FIXTURES / dialect / name).read_bytes()
    reader = AnswerReader("small", UNLIMITED, AnswerLimits(MiB), dialect=dialect)
    reader.begin(200, content_type, "")
    for start in range(0, len(body), 100):  # in network-sized pieces
        reader.feed(body[start : start + 100])
    reader.finish()
    completion = await reader.completion()
    reads = DIALECTS[dialect]
    if name.endswith(".sse"):
        assembler = reads.assembler()
        assembler.feed(body)
        expected = assembler.finish(200)
    else:
        expected = reads.completion_from_json(body, 200)
    assert completion.ok and (completion.text, completion.tool_calls, completion.embeddings) == (
        expected.text,
        expected.tool_calls,
        expected.embeddings,
    )
    assert completion.tool_calls or completion.text or completion.embeddings


def test_an_unpaced_reader_still_yields_to_the_loop_on_every_loop() -> None:
    """UNPACED (the replay's pace) waits for nothing and holds no lock, so one instance serves
    readers on any loop; parsing a long answer still gives the loop a turn between slices."""
    events = [event(f"word{i} ") for i in range(40_000)] + [b"data: [DONE]\n\n"]

    async def read_while_ticking() -> tuple[int, str | None]:
        reader = AnswerReader("replayed", UNPACED, AnswerLimits(16 * MiB))
        reader.begin(200, "text/event-stream", "")
        for chunk in events:
            reader.feed(chunk)
        reader.finish()
        ticks = 0
        parsing = asyncio.create_task(reader.completion())  # noqa: TID251 - a test's own task
        while not parsing.done():
            ticks += 1
            await asyncio.sleep(0)
        return ticks, (await parsing).text

    for _ in range(2):  # two loops, one after the other, share the one instance
        ticks, text = asyncio.run(read_while_ticking())
        assert text is not None and text.startswith("word0 word1 ")
        assert ticks > 10  # ~1.2 MB parsed in turns, the loop served between them
