"""Stopping keeps its promise: in-flight work gets the grace and no more, uploads in progress are
answered, and every sampled exchange is recorded — in-process and as `shadowtap serve` under
SIGTERM with a kill deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from shadowtap.config import parse_config
from shadowtap.recorder import open_readonly
from shadowtap.server import ShadowtapServer

from tests.conftest import StartFake, StartShadowtap, make_config

SHADOWTAP = str(Path(sys.executable).parent / "shadowtap")
CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n"
)
KILL_DEADLINE_S = 35.0  # a supervisor's SIGKILL after SIGTERM (Kubernetes' default is 30 s)


async def send_head_and_half(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD % len(CHAT) + CHAT[:20])
    await writer.drain()
    return reader, writer


async def answer_of(reader: asyncio.StreamReader, within_s: float) -> tuple[int, bytes]:
    """The status and body the server sent before closing (0 when it sent nothing)."""
    try:
        data = await asyncio.wait_for(reader.read(), within_s)
    except ConnectionResetError:
        data = b""
    head, _, body = data.partition(b"\r\n\r\n")
    return (int(head.split()[1]) if head.startswith(b"HTTP/1.1") else 0), body


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def stored(path: Path) -> list[dict[str, Any]]:
    con = open_readonly(path)
    try:
        cursor = con.execute(
            "SELECT e.request_id, r.target, r.status, r.error FROM exchanges e"
            " JOIN responses r USING (request_id) ORDER BY e.request_id, r.target"
        )
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


async def test_stop_with_a_hung_primary_ends_within_the_grace_and_records_everything(
    tmp_path: Path, start_fake: StartFake
) -> None:
    primary, candidate = await start_fake("hang"), await start_fake("hang")
    grace, shadow_timeout = 1.0, 3.0
    config = make_config(
        primary,
        {"slow": {"url": candidate.url, "timeout_s": shadow_timeout}},
        server={"shutdown_grace_s": grace},
        storage={"enabled": True, "path": str(tmp_path / "db.duckdb"), "flush_interval_ms": 20},
    )
    server = ShadowtapServer(parse_config(config, {}))
    await server.start()
    clients = [await asyncio.open_connection("127.0.0.1", server.proxy_port) for _ in range(5)]
    for _, writer in clients:
        writer.write(HEAD % len(CHAT) + CHAT)
    await until(lambda: len(primary.chat_requests()) == len(candidate.chat_requests()) == 5)

    began = time.monotonic()
    await asyncio.wait_for(server.stop(), 60)  # aiohttp's own default alone was 2 x 60 s
    took = time.monotonic() - began
    assert took < 2 * grace + shadow_timeout  # the bound; it is about grace + flush

    rows = stored(tmp_path / "db.duckdb")
    assert len({row["request_id"] for row in rows}) == 5  # every sampled exchange recorded
    for row in rows:
        assert row["status"] is None and row["error"], row  # neither answered: said so
    assert {row["error"] for row in rows if row["target"] == "slow"} == {"cancelled at shutdown"}
    for reader, writer in clients:  # cut off, not left hanging
        assert (await answer_of(reader, 5))[0] == 0
        writer.close()


async def test_uploads_in_progress_at_stop_are_answered_within_the_grace(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake("ok")
    grace = 2.0
    server = await start_shadowtap(make_config(primary, server={"shutdown_grace_s": grace}))
    finishing = [await send_head_and_half(server.proxy_port) for _ in range(3)]
    stalled = [await send_head_and_half(server.proxy_port) for _ in range(2)]
    await asyncio.sleep(0.1)

    began = time.monotonic()
    stopping = asyncio.ensure_future(server.stop())
    await asyncio.sleep(0.3)  # the drain has begun; these uploads still finish in time
    for _, writer in finishing:
        writer.write(CHAT[20:])
    for reader, _ in finishing:
        status, body = await answer_of(reader, 10)
        assert status == 200 and b"forty-two" in body
    for reader, _ in stalled:  # never finished: a clean, retryable error, not silence
        status, body = await answer_of(reader, 10)
        assert status == 503 and b'"code":"shutting_down"' in body
    await stopping
    assert time.monotonic() - began < grace + 1.0
    assert len(primary.chat_requests()) == 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until_ready(admin_port: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as ready:
                    if ready.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("shadowtap did not become ready")


def config_file(tmp_path: Path, primary: str, candidate: str, port: int, admin: int) -> Path:
    path = tmp_path / "shadowtap.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
        "shutdown_grace_s = 2\n"
        f'[primary]\nurl = "{primary}"\n'
        "[sampling]\nrate = 1.0\nmax_per_second = 0\n"
        f'[candidates.c]\nurl = "{candidate}"\ntimeout_s = 30\n'
        '[scorers.similarity]\ntype = "text_similarity"\n'
        f'[storage]\npath = "{tmp_path / "db.duckdb"}"\nflush_interval_ms = 5000\n'
    )
    return path


async def test_sigterm_with_a_hung_primary_and_slow_uploads_exits_in_time_with_every_record(
    tmp_path: Path, start_fake: StartFake
) -> None:
    primary, candidate = await start_fake("hang"), await start_fake("ok")
    port, admin = free_port(), free_port()
    path = config_file(tmp_path, primary.url, candidate.url, port, admin)
    process = await asyncio.create_subprocess_exec(
        SHADOWTAP, "serve", "--config", str(path), stdout=-1, stderr=-1, env=dict(os.environ)
    )
    await wait_until_ready(admin)
    in_flight = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
    for _, writer in in_flight:
        writer.write(HEAD % len(CHAT) + CHAT)
    uploading = [await send_head_and_half(port) for _ in range(4)]
    await until(lambda: len(primary.chat_requests()) == 8)

    process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    await asyncio.sleep(0.2)
    for _, writer in uploading[:2]:  # these finish uploading during the drain
        writer.write(CHAT[20:])
    _, err = await asyncio.wait_for(process.communicate(), KILL_DEADLINE_S)
    took = time.monotonic() - began
    assert process.returncode == 0, err.decode()[-2000:]
    assert took < 2 + 10  # the grace, scoring's 2 s and the flush, far inside the deadline

    for reader, _ in uploading[2:]:
        assert (await answer_of(reader, 5))[0] == 503
    events = [orjson.loads(line)["event"] for line in err.decode().splitlines()]
    assert events[-1] == "stopped"
    rows = stored(tmp_path / "db.duckdb")
    # 8 in flight and the 2 uploads that finished: each reached the hung primary and each
    # exchange was recorded, with the primary's row saying it was not answered.
    assert len({row["request_id"] for row in rows}) == 10
    primary_rows = [row for row in rows if row["target"] == "primary"]
    assert len(primary_rows) == 10 and all(row["error"] for row in primary_rows)
    assert all(row["status"] == 200 for row in rows if row["target"] == "c")
