"""Waiting on the work itself: poll a condition until it holds, instead of sleeping a guess.

    await eventually(lambda: primary.received)       # in a test on the event loop
    wait_for(lambda: written(metrics) == 5)           # in a plain test (a writer thread)

Both fail with AssertionError naming the timeout when the condition never holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_S = 0.01


async def eventually(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(POLL_S)


def wait_for(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(POLL_S)
