"""The writer's next batch, gathered off the record queue: bounded in count, bytes and time.

Gathering sleeps and drains in bulk instead of blocking on the queue per item: every blocking
get() is a wake-up on each put_nowait() and a GIL hand-off from the event loop, thousands a
second under load, which cost the proxy a quarter of its throughput. What is not gathered
stays queued, its bytes still held against the proxy's memory budget
(`sampling.max_held_bytes`), so big prompts are shed there instead of piling up in the
writer's copies.
"""

from __future__ import annotations

import queue
import threading
import time

from shadowtap.exchange import Exchange

DRAIN_POLL_S = 0.02  # how often a gathering writer looks at the queue


def text_bytes(exchange: Exchange) -> int:
    """The bytes of text an exchange puts into a batch: its body and every answer."""
    size = len(exchange.request_body)
    for result in exchange.results.values():
        size += len(result.completion.text or "")
    return size


def gather(
    source: queue.Queue[Exchange],
    batch: list[Exchange],
    *,
    first_wait_s: float,
    flush_s: float,
    limit: int,
    max_bytes: int,
    closing: threading.Event,
) -> None:
    """Wait up to `first_wait_s` for a first exchange, then append to `batch` until `limit`
    exchanges, `max_bytes` of text or `flush_s`, whichever comes first; `closing` cuts the
    wait short. `batch` is filled in place, so the writer's owner sees what it has taken."""
    try:
        first = source.get(timeout=first_wait_s)
    except queue.Empty:
        return
    deadline = time.monotonic() + flush_s
    batch.append(first)
    size = text_bytes(first)
    while len(batch) < limit and size < max_bytes:
        try:
            exchange = source.get_nowait()
        except queue.Empty:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or closing.is_set():
                break
            closing.wait(min(remaining, DRAIN_POLL_S))
            continue
        batch.append(exchange)
        size += text_bytes(exchange)
