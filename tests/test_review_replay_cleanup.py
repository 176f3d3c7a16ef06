"""A replay run that ends while it scores what an earlier run left unscored (cancelled, or
failing there) still closes what it opened: the judges' session and the scoring runner (its
worker processes), not only a run that reached its sends. Real worker processes, a real
DuckDB file, a fake candidate on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.replaying import Candidate, record_synthetic, serve, synthetic_replay_config
from tests.scorer_plugins import registered
from tests.waiting import eventually

N = 4
HOSTILE = {"hostile": {"type": "hostile", "timeout_s": 60}}


async def test_a_run_cancelled_while_rescoring_closes_its_scoring(
    aiohttp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, N)
    # Every answer says "sleep": the hostile scorer sleeps 60 s on it.
    url = await serve(aiohttp_server, Candidate("sleep"))
    with registered(tmp_path / "plugins", monkeypatch):
        config = synthetic_replay_config(url, db, HOSTILE)
        first = ReplayRunner(config, ReplayOptions("new", concurrency=4, progress=False), db)
        run = asyncio.ensure_future(first.run())
        await eventually(lambda: first.counts.answered == N, timeout_s=60)
        await first.cancel()  # N answers stored, none scored
        await run
        second = ReplayRunner(config, ReplayOptions("new", progress=False), db)
        run = asyncio.ensure_future(second.run())
        await eventually(lambda: second.scoring is not None, timeout_s=60)
        await asyncio.sleep(0.5)  # in the rescoring, held by the sleeping scorer
        assert not run.done()
        run.cancel()  # the run itself cancelled (its caller gave up on it)
        with pytest.raises(asyncio.CancelledError):
            await run
    assert second.scoring.session.closed
    assert second.scoring.pool is not None and second.scoring.pool.alive == 0  # workers gone
