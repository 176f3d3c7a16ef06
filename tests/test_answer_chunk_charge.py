"""The primary's side copy is charged what it holds: a relayed chunk is kept as a bytes object
in a (chunk, arrival) tuple on a list, ~120 bytes besides its payload, so a stream relayed in
tiny chunks must not hold many times what `sampling.max_held_bytes` allows. Counted with
tracemalloc against the real budget, never RSS."""

from __future__ import annotations

import tracemalloc

from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import UNPACED, MemoryBudget

LIMIT = 64 * 1024


def test_a_stream_of_one_byte_chunks_holds_no_more_than_its_budget() -> None:
    budget = MemoryBudget(LIMIT)
    hold = budget.admit(0)
    assert hold is not None
    reader = AnswerReader("primary", UNPACED, AnswerLimits(4 * 1024 * 1024), hold)
    reader.begin(200, "text/event-stream", "")
    chunks = [bytes([65 + i % 26]) for i in range(LIMIT)]  # made before counting starts
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for chunk in chunks:
            reader.feed(chunk)
            if reader.cut is not None:
                break
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()
    assert reader.cut == "memory"  # the budget stopped the copy...
    assert budget.held <= LIMIT
    # ...before it held more than the budget (its tuples, floats and list slots included; the
    # chunks themselves existed before). Charged one byte a chunk, it held ~60 times more.
    assert held <= LIMIT, f"held {held:,} bytes under a {LIMIT:,}-byte budget"
