"""The replay's store-first promise attacked from outside: SIGKILL between an answer's commit
and its scores' commit, then a resume (nothing sent twice, everything scored once); and two
replays started on one file at once (one runs, the other stops with a clear error; the file
stays whole). Real `shadowtap replay` processes, a real DuckDB file, a fake candidate on
loopback, real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.replaying import (
    NOWHERE,
    Candidate,
    record_synthetic,
    serve,
    synthetic_replay_config,
    write_synthetic_config,
)
from tests.scorer_plugins import registered
from tests.waiting import eventually

N = 12
ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 20  # not a speed bound: a hang fails instead of stalling the suite


def write_hostile_config(path: Path, candidate_url: str, db: Path) -> Path:
    lines = [
        "[primary]",
        f'url = "{NOWHERE}"',
        "[storage]",
        f'path = "{db}"',
        'bodies = "full"',
        "[scorers.hostile]",
        'type = "hostile"',
        "timeout_s = 60",
        "[candidates.new]",
        f'url = "{candidate_url}"',
        "timeout_s = 60",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def start_replay(config: Path, db: Path, plugins: Path) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(plugins), str(ROOT))))
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "shadowtap.cli", "replay", "--config", str(config)),
        *("--db", str(db), "--candidate", "new", "--no-progress"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


def rescoring(runner: ReplayRunner) -> bool:
    """The run has handed stored answers to its scoring workers (before sending anything)."""
    return runner.scoring is not None and runner.scoring.pool.jobs_sent > 0


def stored(db: Path) -> tuple[int, int, int]:
    """Answers of `new`, its score rows, and its distinct (request, scorer) scored."""
    con = duckdb.connect(str(db))
    try:
        row = con.execute(
            "SELECT (SELECT count(*) FROM responses WHERE target = 'new'),"
            " (SELECT count(*) FROM scores WHERE target = 'new'),"
            " (SELECT count(DISTINCT (request_id, scorer)) FROM scores WHERE target = 'new')"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return row[0], row[1], row[2]


async def test_kill_9_between_the_answers_and_their_scores_then_resume_scores_each_once(
    aiohttp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, N)
    # "sleep": the hostile scorer sleeps 60 s on each answer, so the run is killed with every
    # answer committed and none of their scores.
    candidate = Candidate("sleep")
    url = await serve(aiohttp_server, candidate)
    plugins = tmp_path / "plugins"
    with registered(plugins, monkeypatch):
        config = write_hostile_config(tmp_path / "shadowtap.toml", url, db)
        process = await start_replay(config, db, plugins)
        try:
            await eventually(lambda: len(candidate.seen) == N, timeout_s=HANG_GUARD_S)
            # The last answers' commit follows them within GATHER_S (0.1 s).
            await asyncio.sleep(1.0)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    assert stored(db) == (N, 0, 0)

    resumed = await ReplayRunner(
        synthetic_replay_config(url, db), ReplayOptions("new", progress=False), db
    ).run()
    assert resumed.counts.attempts == 0 and resumed.counts.rescored == N
    assert stored(db) == (N, N, N)
    assert len(candidate.seen) == N and set(candidate.seen.values()) == {1}  # sent once each

    again = await ReplayRunner(
        synthetic_replay_config(url, db), ReplayOptions("new", progress=False), db
    ).run()
    assert again.counts.attempts == 0 and again.counts.rescored == 0
    assert stored(db) == (N, N, N)  # no duplicate score rows


async def test_two_replays_on_one_file_at_once_one_runs_the_other_says_why(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, N)
    candidate = Candidate("An answer.")
    url = await serve(aiohttp_server, candidate)
    config = write_synthetic_config(tmp_path / "shadowtap.toml", url, db)
    first, second = [await start_replay(config, db, tmp_path) for _ in range(2)]
    outputs = await asyncio.wait_for(
        asyncio.gather(first.communicate(), second.communicate()), HANG_GUARD_S
    )
    # Usually the second finds the file locked; if the first was already done, it sends nothing.
    codes = sorted([first.returncode, second.returncode])
    errors = [err.decode() for (_, err) in outputs]
    assert codes[0] == 0
    assert stored(db)[0] == N
    assert len(candidate.seen) == N and set(candidate.seen.values()) == {1}
    if codes[1] != 0:
        refused = errors[[first.returncode, second.returncode].index(codes[1])]
        assert codes[1] == 2 and "Traceback" not in refused
        assert f"{db} is open in another process" in refused


async def test_ctrl_c_twice_during_rescore_cuts_the_scoring_off_and_a_rerun_scores(
    aiohttp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, N)
    candidate = Candidate("sleep")
    url = await serve(aiohttp_server, candidate)
    hostile = {"hostile": {"type": "hostile", "timeout_s": 3600}}
    with registered(tmp_path / "plugins", monkeypatch):
        config = synthetic_replay_config(url, db, hostile)
        # Answers stored, none scored: the hostile scorer sleeps on every one.
        first = ReplayRunner(config, ReplayOptions("new", progress=False), db)
        run = asyncio.ensure_future(first.run())
        await eventually(lambda: first.counts.answered == N, timeout_s=HANG_GUARD_S)
        await first.cancel()
        await asyncio.wait_for(run, HANG_GUARD_S)
        assert stored(db) == (N, 0, 0)

        # The next run starts by rescoring them, and sleeps in the scorer: Ctrl-C twice.
        second = ReplayRunner(config, ReplayOptions("new", progress=False), db)
        run = asyncio.ensure_future(second.run())
        await eventually(lambda: rescoring(second), timeout_s=HANG_GUARD_S)
        second.stop("interrupted (Ctrl-C)")
        await second.cancel()
        # Without the cut, the run waits out the scorer's hour.
        cut = await asyncio.wait_for(run, HANG_GUARD_S)
    assert cut.counts.attempts == 0 and cut.counts.rescored == 0
    assert stored(db) == (N, 0, 0)

    resumed = await ReplayRunner(
        synthetic_replay_config(url, db), ReplayOptions("new", progress=False), db
    ).run()
    assert resumed.counts.rescored == N and stored(db) == (N, N, N)
    assert set(candidate.seen.values()) == {1}
