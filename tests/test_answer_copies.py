"""A sampled answer is held once when it is parsed: the primary's relayed copy is let go as it
is decoded into the buffer, and the buffer itself is parsed, not a bytes() copy of it.
Counted in bytes (tracemalloc, read at the moment orjson parses the answer), not in RSS."""

from __future__ import annotations

import sys
import tracemalloc
from types import FrameType
from typing import Any

import orjson
from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import UNPACED

MIB = 1024 * 1024


async def test_a_3mib_answer_is_held_once_when_it_is_parsed() -> None:
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        text = "answer " * (3 * MIB // 7)
        body = orjson.dumps(
            {"choices": [{"message": {"role": "assistant", "content": text}}], "model": "m"}
        )
        reader = AnswerReader("primary", UNPACED, AnswerLimits(4 * MIB))
        reader.begin(200, "application/json", "")
        for start in range(0, len(body), 64 * 1024):  # relayed as forward_primary hands it on
            reader.feed(body[start : start + 64 * 1024])
        reader.finish()
        del text, body
        relayed = tracemalloc.get_traced_memory()[0]  # the relayed copy, held
        at_parse: list[int] = []

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "c_call" and arg is orjson.loads:
                at_parse.append(tracemalloc.get_traced_memory()[0] - relayed)

        sys.setprofile(profile)
        try:
            completion = await reader.completion()
        finally:
            sys.setprofile(None)
    finally:
        if not tracing:
            tracemalloc.stop()
    assert completion.text is not None and len(completion.text) > 3 * MIB - 8
    [extra] = at_parse
    # Held once: the decoded buffer took the relayed copy's place (about +0.4 MiB of the
    # buffer's growth room). Before, the relayed copy, the buffer and a bytes() copy of it
    # were all held: +6 MiB.
    assert extra < MIB, f"{extra / MIB:.1f} MiB over the relayed copy"
