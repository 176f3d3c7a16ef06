"""Running `shadowtap serve` as a real process: the console script, free ports, readiness."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp

SHADOWTAP = str(Path(sys.executable).parent / "shadowtap")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_until_ready(
    session: aiohttp.ClientSession, admin_port: int, timeout_s: float = 10.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as ready:
                if ready.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("shadowtap did not become ready")
