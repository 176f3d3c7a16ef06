"""The traffic generator drives the simulated models through the official client."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from rich.console import Console
from shadowtap.demo import traffic
from shadowtap.demo.models import STATE, build_app


async def test_a_fixed_number_of_requests_all_answered(aiohttp_server: Any) -> None:
    server = await aiohttp_server(build_app("primary", speed=1000, seed=1))
    stats = await traffic.drive(
        str(server.make_url("/v1")), requests=40, concurrency=4, seed=2, show_progress=False
    )
    assert (stats.sent, stats.ok, dict(stats.errors)) == (40, 40, {})
    assert 0 < stats.streamed < 40
    assert server.app[STATE].outcomes["ok"] == 40
    assert "40 requests, 40 ok" in stats.summary()


async def test_forever_runs_at_the_rate_until_stopped(aiohttp_server: Any) -> None:
    server = await aiohttp_server(build_app("flaky", speed=1000, seed=1))
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    out = io.StringIO()
    stats = await traffic.drive(
        str(server.make_url("/v1")),
        requests=None,
        rps=20,
        timeout_s=0.5,
        stop=stop,
        console=Console(file=out),
        show_progress=False,
    )
    # ~20 in the second, paced rather than as fast as possible (unpaced, the fake answers
    # hundreds); errors counted, not raised. No tight lower bound: a busy machine (2 cores
    # shared by several test runs) sends fewer in the second, which says nothing of pacing.
    assert 3 <= stats.sent <= 30
    assert stats.ok + sum(stats.errors.values()) == stats.sent
