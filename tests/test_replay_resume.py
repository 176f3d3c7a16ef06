"""A replay killed with SIGKILL mid-run and started again sends every request exactly once and
keeps every answer it had stored; a finished replay started again sends nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import orjson
from aiohttp import web
from shadowtap.replay.run import ReplayOptions, ReplayRunner
from shadowtap.replay.source import Selection

from tests.conftest import StartFake, StartShadowtap
from tests.fakes import chat_json
from tests.replaying import record_traffic, replay_config, write_config

N = 30
ANSWERED_FIRST = 10  # the fake answers these at once, then holds every later request
CONCURRENCY = 3


class CountingCandidate:
    """Counts each request by its prompt; answers `answer_first` of them, then holds the rest
    until `hold` is cleared."""

    def __init__(self, answer_first: int, delay_s: float = 0.0) -> None:
        self.answer_first = answer_first
        self.delay_s = delay_s
        self.seen: Counter[str] = Counter()
        self.held = 0
        self.release = asyncio.Event()
        self.notify_at = 0  # `arrived` is set once this many requests have come in
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = orjson.loads(body)
        self.seen[payload["messages"][-1]["content"]] += 1
        if self.notify_at and sum(self.seen.values()) >= self.notify_at:
            self.arrived.set()
        if sum(self.seen.values()) > self.answer_first and not self.release.is_set():
            self.held += 1
            await self.release.wait()
        await asyncio.sleep(self.delay_s)
        return web.json_response(chat_json(payload, "Same answer for all.", body))


async def start_replay(config_path: Path, db: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "shadowtap.cli", "replay", "--config", str(config_path)),
        *("--db", str(db), "--candidate", "new", "--concurrency", str(CONCURRENCY)),
        "--no-progress",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def serve_candidate(aiohttp_server: Any, fake: CountingCandidate) -> str:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_kill_9_mid_run_then_resume_sends_each_request_exactly_once(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    primary = await record_traffic(start_fake, start_shadowtap, db, N)
    fake = CountingCandidate(ANSWERED_FIRST)
    url = await serve_candidate(aiohttp_server, fake)
    config_path = write_config(tmp_path / "shadowtap.toml", primary, {"new": url}, db)

    process = await start_replay(config_path, db)
    try:
        async with asyncio.timeout(60):
            while fake.held < CONCURRENCY:  # every slot is in flight at the fake, held
                assert process.returncode is None, await process.stderr.read()  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        # The first answers' commit follows them within milliseconds; claims taken ahead of
        # the sends are handed back 0.2 s after the last was drawn (claims.IDLE_S).
        await asyncio.sleep(1.0)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    assert sum(fake.seen.values()) == ANSWERED_FIRST + CONCURRENCY

    con = duckdb.connect(str(db))  # the killed run's WAL is replayed on open
    stored = con.execute("SELECT count(*) FROM responses WHERE target = 'new'").fetchone()
    claims = con.execute("SELECT count(*) FROM replay_claims WHERE target = 'new'").fetchone()
    con.close()
    assert stored == (ANSWERED_FIRST,)  # nothing answered was lost
    assert claims == (ANSWERED_FIRST + CONCURRENCY,)

    fake.release.set()
    config = replay_config(primary, {"new": url})
    resumed = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert resumed.counts.answered == N - ANSWERED_FIRST - CONCURRENCY
    assert resumed.counts.skipped == {"answered": ANSWERED_FIRST, "interrupted": CONCURRENCY}
    assert len(fake.seen) == N and set(fake.seen.values()) == {1}  # each sent exactly once

    again = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert again.counts.planned == 0 and again.counts.attempts == 0
    assert again.counts.skipped == {"answered": N - CONCURRENCY, "interrupted": CONCURRENCY}

    # Opting in sends the three whose answers the kill lost, and only those.
    retry = ReplayOptions("new", Selection(retry_interrupted=True), progress=False)
    retried = await ReplayRunner(config, retry, db).run()
    assert retried.counts.answered == CONCURRENCY
    assert sum(fake.seen.values()) == N + CONCURRENCY
    con = duckdb.connect(str(db))
    per_request = con.execute(
        "SELECT count(*), count(DISTINCT request_id) FROM responses WHERE target = 'new'"
    ).fetchone()
    assert per_request == (N, N)


async def test_ctrl_c_stops_starting_requests_and_stores_those_in_flight(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    primary = await record_traffic(start_fake, start_shadowtap, db, N)
    fake = CountingCandidate(N, delay_s=0.5)
    fake.notify_at = CONCURRENCY + 1  # one answered, three in flight
    url = await serve_candidate(aiohttp_server, fake)
    config_path = write_config(tmp_path / "shadowtap.toml", primary, {"new": url}, db)

    process = await start_replay(config_path, db)
    async with asyncio.timeout(60):
        await fake.arrived.wait()
        process.send_signal(signal.SIGINT)
        out, err = await process.communicate()
    assert process.returncode == 3, err  # stopped early: the same command resumes
    assert b"Stopped early: interrupted (Ctrl-C)." in b" ".join(out.split())  # wrapped or not
    sent = sum(fake.seen.values())
    con = duckdb.connect(str(db))
    stored = con.execute("SELECT count(*) FROM responses WHERE target = 'new'").fetchone()
    claims = con.execute("SELECT count(*) FROM replay_claims WHERE target = 'new'").fetchone()
    con.close()
    assert stored == claims == (sent,)  # every request that went out was answered and stored
    assert sent < N

    config = replay_config(primary, {"new": url})
    fake.delay_s = 0.0
    rest = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert rest.complete and rest.counts.answered == N - sent
    assert len(fake.seen) == N and set(fake.seen.values()) == {1}
