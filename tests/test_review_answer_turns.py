"""A relayed copy of a stream (the primary's side copy, parsed after the answer was relayed)
is thousands of small chunks. Each chunk opened and closed its own parsing turn, none lasting
`TURN_S`, so the copy was parsed with no yield to the loop between chunks: a 1.2 MB stream
held the loop for tens of milliseconds at a time (~10 ms on average per turn of the loop,
up to the pace's 50 ms burst), delaying every other request on it. Now the loop gets a turn
every `TURN_S` across chunks too. Counted in turns of the loop per parse, not timed against a
figure: the holds average well under a few `TURN_S` however loaded the machine (a descheduled
parse only ends its turn sooner)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import TURN_S, UNPACED, Pace

MiB = 1 << 20


def event(text: str) -> bytes:
    delta = {"index": 0, "delta": {"content": text}}
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [delta]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


EVENTS = [event(f"word{i} ") for i in range(40_000)] + [b"data: [DONE]\n\n"]


async def average_hold_s(pace: Pace) -> float:
    """The loop time the parse of the pushed copy took per turn of the loop it left others."""
    reader = AnswerReader("primary", pace, AnswerLimits(16 * MiB))
    reader.begin(200, "text/event-stream", "")
    for chunk in EVENTS:
        reader.feed(chunk)
    reader.finish()
    began = time.perf_counter()
    ticks = 0
    parsing = asyncio.create_task(reader.completion())  # noqa: TID251 - a test's own task
    while not parsing.done():
        ticks += 1
        await asyncio.sleep(0)
    took = time.perf_counter() - began
    completion = await parsing
    assert completion.text is not None and completion.text.startswith("word0 word1 ")
    return took / ticks


@pytest.mark.parametrize("pace", [UNPACED, Pace(0, 16 * MiB, 0)], ids=["unpaced", "no_share"])
async def test_a_pushed_stream_of_small_chunks_yields_to_the_loop_between_them(
    pace: Pace,
) -> None:
    assert await average_hold_s(pace) < 4 * TURN_S
