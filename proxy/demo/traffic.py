"""Realistic traffic through the official `openai` client, as an application would send it.

Standalone (the compose stack runs it as its own service):

    python -m shadowtap.demo.traffic --base-url http://shadowtap:8080/v1 --requests 300
    python -m shadowtap.demo.traffic --base-url http://shadowtap:8080/v1 --forever --rps 2

Requests come from `shadowtap.demo.prompts` (chat, JSON mode, JSON schema, tool calls, tool-result
follow-ups, streaming) under bounded concurrency and an optional rate; a rich progress bar
shows how far it got. Errors are counted, never fatal: the point is to keep traffic flowing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from shadowtap.demo import prompts

STATUS_EVERY_S = 60.0


@dataclass(slots=True)
class TrafficStats:
    sent: int = 0
    ok: int = 0
    streamed: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # exception class name -> count
    # Bounded: with --forever this runs for days; the recent window is what the summary shows.
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def summary(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        p50 = sorted(self.latencies_s)[len(self.latencies_s) // 2] if self.latencies_s else 0.0
        return (
            f"{self.sent} requests, {self.ok} ok ({self.streamed} streamed), "
            f"median latency {p50 * 1000:.0f} ms, errors: {errors}"
        )


async def send_one(client: openai.AsyncOpenAI, kwargs: dict[str, Any]) -> bool:
    """One request, consumed as an application would (streams read to the end); True if ok."""
    if kwargs.get("stream"):
        stream = await client.chat.completions.create(**kwargs)
        async for _chunk in stream:
            pass
        return True
    await client.chat.completions.create(**kwargs)
    return True


async def wait_ready(client: openai.AsyncOpenAI, within_s: float) -> None:
    """Poll `GET /models` until the endpoint answers (compose may start us before shadowtap)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await client.models.list()
            return
        except openai.APIError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(1.0)


async def drive(
    base_url: str,
    *,
    requests: int | None,
    concurrency: int = 8,
    rps: float | None = None,
    seed: int = 0,
    timeout_s: float = 60.0,
    wait_s: float = 0.0,
    console: Console | None = None,
    show_progress: bool = True,
    stop: asyncio.Event | None = None,
) -> TrafficStats:
    """Send `requests` requests (None: until `stop` is set) and return what happened."""
    # The demo key is fake on purpose: shadowtap forwards it to the primary, never to candidates.
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="demo-key", max_retries=0, timeout=timeout_s
    )
    stats = TrafficStats()
    stop = stop or asyncio.Event()
    rng = random.Random(seed)
    indices: Iterator[int] = itertools.count() if requests is None else iter(range(requests))
    started = time.monotonic()
    next_status = [started + STATUS_EVERY_S]
    progress = Progress(
        TextColumn("[bold]traffic"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    )

    async def worker(task_id: Any) -> None:
        for i in indices:
            if stop.is_set():
                return
            if rps:  # pace starts evenly: request i starts no earlier than i / rps seconds in
                await asyncio.sleep(max(0.0, started + i / rps - time.monotonic()))
                if stop.is_set():
                    return
            kwargs = prompts.request(i, rng)
            stats.sent += 1
            begun = time.monotonic()
            try:
                await send_one(client, kwargs)
            except (openai.APIError, OSError) as error:
                stats.errors[type(error).__name__] += 1
                if isinstance(error, openai.APIConnectionError):
                    await asyncio.sleep(0.5)  # the endpoint is down: do not spin
            else:
                stats.ok += 1
                stats.streamed += bool(kwargs.get("stream"))
                stats.latencies_s.append(time.monotonic() - begun)
            progress.update(task_id, advance=1, errors=sum(stats.errors.values()))
            if not show_progress and time.monotonic() >= next_status[0]:
                # Without a progress bar (containers, CI logs) say something now and then.
                (console or Console(stderr=True)).print(f"traffic: {stats.summary()}")
                next_status[0] = time.monotonic() + STATUS_EVERY_S

    try:
        if wait_s > 0:
            await wait_ready(client, wait_s)
        with progress:
            task_id = progress.add_task("traffic", total=requests, errors=0)
            await asyncio.gather(*(worker(task_id) for _ in range(max(1, concurrency))))
    finally:
        await client.close()
    return stats


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m shadowtap.demo.traffic", description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--forever", action="store_true", help="keep sending until stopped")
    parser.add_argument("--rps", type=float, default=None, help="requests per second (max)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None, help="default: a new mix each run")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the URL")
    parser.add_argument("--no-progress", action="store_true", help="for logs without a TTY")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":  # Windows event loops have no signal handlers
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    console = Console(stderr=True)
    stats = await drive(
        args.base_url,
        requests=None if args.forever else args.requests,
        concurrency=args.concurrency,
        rps=args.rps,
        seed=random.randrange(2**32) if args.seed is None else args.seed,
        wait_s=args.wait,
        console=console,
        show_progress=not args.no_progress,
        stop=stop,
    )
    console.print(stats.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_main(_parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
