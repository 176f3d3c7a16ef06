"""A replayed answer is stored before it is scored, and the next run of the same candidate
scores what was stored but never scored, sending nothing again. Real worker processes, a real
DuckDB file, a fake candidate on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import duckdb
import pytest
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.replaying import Candidate, record_synthetic, serve, synthetic_replay_config
from tests.scorer_plugins import registered
from tests.waiting import eventually

N = 12


def stored(db: Path) -> tuple[int, int]:
    con = duckdb.connect(str(db))
    answers = con.execute("SELECT count(*) FROM responses WHERE target = 'new'").fetchone()
    scores = con.execute("SELECT count(score) FROM scores WHERE target = 'new'").fetchone()
    con.close()
    assert answers is not None and scores is not None
    return answers[0], scores[0]


async def test_answers_stored_before_scoring_are_scored_by_the_next_run(
    aiohttp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, N)
    # Every answer says "sleep": the hostile scorer then sleeps 60 s on it, so no pair is
    # scored while the run is cut off (a kill mid-scoring, as far as storage can tell).
    candidate = Candidate("sleep")
    url = await serve(aiohttp_server, candidate)
    with registered(tmp_path / "plugins", monkeypatch):
        config = synthetic_replay_config(url, db, {"hostile": {"type": "hostile", "timeout_s": 60}})
        runner = ReplayRunner(config, ReplayOptions("new", concurrency=4, progress=False), db)
        run = asyncio.ensure_future(runner.run())
        await eventually(lambda: runner.counts.answered == N, timeout_s=60)
        await runner.cancel()  # a second Ctrl-C: the scoring in flight is cut off
        cut = await run
    assert cut.recorded == N and cut.counts.answered == N
    assert stored(db) == (N, 0)  # every answer kept; no score (the old code kept neither)

    resumed = await ReplayRunner(
        synthetic_replay_config(url, db), ReplayOptions("new", progress=False), db
    ).run()
    assert resumed.counts.attempts == 0 and resumed.counts.skipped == {"answered": N}
    assert resumed.counts.rescored == N
    assert "Scored 12 answers an earlier run stored but did not score." in resumed.paragraph()
    assert stored(db) == (N, N)
    assert len(candidate.seen) == N and set(candidate.seen.values()) == {1}  # sent once each

    again = await ReplayRunner(
        synthetic_replay_config(url, db), ReplayOptions("new", progress=False), db
    ).run()
    assert again.counts.rescored == 0 and stored(db) == (N, N)  # scored once
