"""Claims committed in blocks ahead of the sends keep every promise of one claim per send.

The candidate is fast, so the claim lane keeps a stock of claimed requests flowing, and the
replay is killed (SIGKILL) or interrupted (SIGINT) by the candidate itself at the moment a
given request arrives: mid-block, with claims committed for requests not sent yet. Then:

* every request the candidate ever saw was claimed before it arrived: its claim is in the
  database's write-ahead log (written to the OS, so no kill of the process can lose it) when
  the candidate receives it, so no later run sends it again;
* answers stored before a kill stay stored and are never asked for again;
* an interrupted run hands its unsent claims back: the same command sends them, once;
* a request asked for while the lane hands its stock back is claimed again, not forgotten;
* a pair waits for a scoring worker at any concurrency instead of being skipped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from aiohttp import web
from shadowtap.completion import Completion
from shadowtap.recorder import connect
from shadowtap.recorder.privacy import Privacy
from shadowtap.replay.claims import IDLE_S, ClaimLane
from shadowtap.replay.run import ReplayOptions, ReplayRunner
from shadowtap.replay.source import Recorded, Selection
from shadowtap.replay.store import ReplayStore
from shadowtap.tasks import TaskSet

from tests.replaying import record_synthetic, synthetic_replay_config, write_synthetic_config
from tests.scorer_plugins import registered

N = 240
CONCURRENCY = 4
MAX_STOCK = max(16, 2 * CONCURRENCY)  # the lane's bound on claims ahead of the sends


class Interrupter:
    """A fast candidate that counts each request by its question and, when the `at`-th
    request of the current run arrives, sends `signum` to the replay process before answering
    (so requests after it, in flight or claimed ahead, are cut off mid-block).

    With `ids` (question -> request id) and `wal`, it also checks on each arrival that the
    request's claim has reached DuckDB's write-ahead log; those that had not are `undurable`."""

    def __init__(self, ids: dict[str, str] | None = None, wal: Path | None = None) -> None:
        self.ids = ids or {}
        self.wal = wal
        self.checked = 0
        self.undurable: list[str] = []
        self.seen: Counter[str] = Counter()
        self.pid = 0
        self.at = 0
        self.signum = signal.SIGKILL
        self.arrived = 0  # in the current run

    async def handle(self, request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        question = payload["messages"][-1]["content"]
        if self.wal is not None:
            logged = self.wal.read_bytes() if self.wal.exists() else b""
            self.checked += 1
            if self.ids[question].encode() not in logged:
                self.undurable.append(question)
        self.seen[question] += 1
        self.arrived += 1
        if self.pid and self.arrived == self.at:
            os.kill(self.pid, self.signum)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "new",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Paris."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 2},
            }
        )


async def serve(aiohttp_server: Any, candidate: Interrupter) -> str:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", candidate.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def run_until(candidate: Interrupter, config: Path, db: Path, at: int, signum: int) -> int:
    """Run `shadowtap replay` in a child process until the candidate signals it at the
    `at`-th arrival; its exit code."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "shadowtap.cli", "replay", "--config", str(config)),
        *("--db", str(db), "--candidate", "new", "--concurrency", str(CONCURRENCY)),
        "--no-progress",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    candidate.pid, candidate.at, candidate.signum, candidate.arrived = process.pid, at, signum, 0
    async with asyncio.timeout(90):
        _, err = await process.communicate()
    candidate.pid = 0
    assert candidate.arrived >= at, err.decode()[-2000:]
    return process.returncode if process.returncode is not None else -1


def request_ids(db: Path) -> dict[str, str]:
    """question -> request id of every recorded exchange."""
    con = duckdb.connect(str(db))
    try:
        rows = con.execute(
            "SELECT CAST(request_body AS VARCHAR), request_id FROM exchanges"
        ).fetchall()
    finally:
        con.close()
    return {orjson.loads(body)["messages"][-1]["content"]: rid for body, rid in rows}


def state(db: Path) -> tuple[set[str], set[str]]:
    """(questions claimed, questions answered) for the candidate `new`."""
    con = duckdb.connect(str(db))
    try:

        def questions(table: str) -> set[str]:
            rows = con.execute(
                f"SELECT CAST(e.request_body AS VARCHAR) FROM {table} AS t"
                " JOIN exchanges AS e USING (request_id) WHERE t.target = 'new'"
            ).fetchall()
            return {orjson.loads(row[0])["messages"][-1]["content"] for row in rows}

        return questions("replay_claims"), questions("responses")
    finally:
        con.close()


async def test_kill_9_mid_block_never_loses_a_claim_and_nothing_is_sent_twice(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, N)
    candidate = Interrupter(request_ids(db), Path(f"{db}.wal"))
    url = await serve(aiohttp_server, candidate)
    config_path = write_synthetic_config(tmp_path / "shadowtap.toml", url, db)

    answered_before: set[str] = set()
    unsent_claims = []
    for at in (60, 45, 70):  # three kills, each mid-flow
        code = await run_until(candidate, config_path, db, at, signal.SIGKILL)
        assert code == -signal.SIGKILL
        claimed, answered = state(db)
        seen = set(candidate.seen)
        # No request left before its claim was written: a kill at any moment keeps every claim.
        assert candidate.checked == sum(candidate.seen.values()) and candidate.undurable == []
        assert seen <= claimed
        assert answered <= seen and answered_before <= answered  # stored answers stay stored
        # Claimed but never sent by this run: the stock of claims ahead, and the requests
        # that had their slot but had not gone out yet, no more.
        unsent_claims.append(len(claimed - seen) - sum(unsent_claims))
        assert unsent_claims[-1] <= MAX_STOCK + CONCURRENCY
        answered_before = answered
        print(f"kill at {at}: {len(seen)} sent, {len(claimed)} claimed, {len(answered)} stored")
        assert set(candidate.seen.values()) == {1}  # nothing sent twice, kill after kill
    # The kills did come mid-block: claims were committed ahead of what had been sent.
    assert any(unsent_claims)

    claimed, answered = state(db)
    config = synthetic_replay_config(url, db)
    rest = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert rest.complete, rest.paragraph()
    assert rest.counts.skipped["answered"] == len(answered)
    assert rest.counts.skipped["interrupted"] == len(claimed - answered)
    assert rest.counts.answered == N - len(claimed)
    assert len(candidate.seen) == N - len(claimed - set(candidate.seen))
    assert set(candidate.seen.values()) == {1}

    # Opting in sends what the kills left claimed without an answer, each once more at most:
    # twice only what was in flight at a kill, once what was claimed ahead and never sent.
    interrupted = claimed - answered
    retry = ReplayOptions("new", Selection(retry_interrupted=True), progress=False)
    retried = await ReplayRunner(config, retry, db).run()
    assert retried.counts.answered == len(interrupted)
    assert len(candidate.seen) == N and max(candidate.seen.values()) <= 2
    twice = {q for q, count in candidate.seen.items() if count == 2}
    assert twice <= interrupted
    assert candidate.undurable == []
    con = duckdb.connect(str(db))
    per_request = con.execute(
        "SELECT count(*), count(DISTINCT request_id) FROM responses WHERE target = 'new'"
    ).fetchone()
    con.close()
    assert per_request == (N, N)


async def test_ctrl_c_mid_block_hands_unsent_claims_back_for_the_next_run(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, N)
    candidate = Interrupter()
    url = await serve(aiohttp_server, candidate)
    config_path = write_synthetic_config(tmp_path / "shadowtap.toml", url, db)

    code = await run_until(candidate, config_path, db, 30, signal.SIGINT)
    assert code == 3  # stopped early: the same command resumes
    claimed, answered = state(db)
    seen = set(candidate.seen)
    # Everything sent was answered and stored; no claim is left on what was not sent.
    assert claimed == answered == seen
    assert len(seen) < N

    config = synthetic_replay_config(url, db)
    rest = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert rest.complete and rest.counts.answered == N - len(seen)
    assert "interrupted" not in rest.counts.skipped
    assert len(candidate.seen) == N and set(candidate.seen.values()) == {1}


async def test_at_concurrency_64_every_pair_waits_for_scoring_instead_of_being_skipped(
    aiohttp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 300
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, n)
    candidate = Interrupter()
    url = await serve(aiohttp_server, candidate)
    # 20 ms a pair on 2 workers: answers come far faster than they are scored, so the pairs
    # waiting for a worker outnumber the proxy's scoring queue (100) many times over.
    scorers = {"deliberate": {"type": "deliberate"}}
    with registered(tmp_path / "plugins", monkeypatch):
        # A time limit no busy machine reaches: a pair is scored or, on the old code, skipped.
        config = synthetic_replay_config(url, db, scorers, {"scoring_timeout_s": 60})
        options = ReplayOptions("new", concurrency=64, progress=False)
        summary = await ReplayRunner(config, options, db).run()
    assert summary.complete and summary.counts.answered == n
    assert summary.counts.unscored == 0
    con = duckdb.connect(str(db))
    scored = con.execute(
        "SELECT count(*), count(score) FROM scores WHERE target = 'new' AND scorer = 'deliberate'"
    ).fetchone()
    con.close()
    assert scored == (n, n)  # the previous code skipped 189 of 300 ("scoring queue full")


def planned(i: int) -> Recorded:
    body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
    return Recorded(
        request_id=f"r{i}",
        started_at=datetime.now(UTC),
        method="POST",
        path="/v1/chat/completions",
        route="/v1/chat/completions",
        model="m",
        stream=False,
        body=orjson.dumps(body),
        request_json=body,
        primary=Completion(status=200, text="a"),
        redacted=False,
    )


async def test_a_request_asked_for_while_the_stock_is_handed_back_is_claimed_again(
    tmp_path: Path,
) -> None:
    store = ReplayStore(
        connect(tmp_path / "shadowtap.duckdb"),
        Privacy("full"),
        "new",
        "run-1",
        TaskSet(),
        max_text_bytes=128 * 1024,
    )
    pages = [[planned(i) for i in range(3)]]

    async def next_page() -> list[Recorded] | None:
        return pages.pop() if pages else None

    lane = ClaimLane(store, next_page, max_stock=16)
    # Two asking at once: the whole plan is read and claimed, one request stays in stock.
    first = await asyncio.gather(lane.next(), lane.next())
    assert [r.request_id for r in first if r is not None] == ["r0", "r1"]
    # The claims thread is kept busy (as a slow disk would), so the hand-back of the idle
    # stock is still committing when the last request is asked for.
    busy = asyncio.ensure_future(store._on_claims(lambda con: time.sleep(IDLE_S * 5)))
    await asyncio.sleep(IDLE_S * 2)
    last = await lane.next()
    assert last is not None and last.request_id == "r2"
    assert await lane.next() is None
    await busy
    await lane.close()
    await store.close()
    con = duckdb.connect(str(tmp_path / "shadowtap.duckdb"))
    claims = con.execute("SELECT request_id FROM replay_claims ORDER BY 1").fetchall()
    con.close()
    assert claims == [("r0",), ("r1",), ("r2",)]  # r2 handed back, then claimed again
