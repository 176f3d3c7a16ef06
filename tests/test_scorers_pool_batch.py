"""Batched scoring jobs and workers started on demand: several exchanges' jobs go to a worker in
one frame without losing any guarantee of one job per frame (a pair over its time limit costs
only its own score, a cancelled caller costs nobody a worker), and an idle proxy runs none.
Real worker processes, real plug-in scorers."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.metrics import Metrics
from shadowtap.scorers.base import ScorerOptions
from shadowtap.scorers.pool import CpuSettings
from shadowtap.scorers.runner import ScoringRunner

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.pool_support import answered, hostile, pool_of
from tests.scorer_plugins import Imports, Sleepy
from tests.shadowing import CHAT, drain, post
from tests.waiting import eventually


def worker_pids() -> set[int]:
    """This process's children that are scoring workers (and still running)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] != "Z" and b"scorers.worker" in cmdline:
            pids.add(int(entry.name))
    return pids


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_queued_jobs_reach_a_worker_in_one_batch(session: aiohttp.ClientSession) -> None:
    runner = ScoringRunner([hostile(timeout_s=30)], Metrics(), session, CpuSettings(processes=1))
    # Queued while the (lazily started) worker boots: all ten leave in the first frame.
    scores = await asyncio.gather(*(runner.score(answered(f"fine {i}")) for i in range(10)))
    pool = pool_of(runner)
    await runner.close()
    assert [s.score for (s,) in scores] == [1.0] * 10
    assert (pool.batches_sent, pool.jobs_sent) == (1, 10)


@pytest.mark.parametrize("behaviour", ["spin", "segv"])
async def test_a_pathological_pair_costs_its_batch_mates_nothing(
    session: aiohttp.ClientSession, behaviour: str
) -> None:
    registry = CollectorRegistry()
    runner = ScoringRunner(
        [hostile(timeout_s=0.5)], Metrics(registry), session, CpuSettings(processes=1)
    )
    texts = [f"fine {i}" for i in range(10)]
    texts[3] = behaviour
    results = await asyncio.gather(*(runner.score(answered(text)) for text in texts))
    pool = pool_of(runner)
    await runner.close()
    assert pool.batches_sent == 2  # the ten together, then the six after the bad one
    scores = [score for (score,) in results]
    bad = scores.pop(3)
    assert bad.score is None and bad.error is not None
    assert bad.error.startswith("TimeoutError" if behaviour == "spin" else "WorkerDied")
    assert [s.score for s in scores] == [1.0] * 9  # every other pair scored, none dropped
    pids = [s.detail["pid"] for s in scores if s.detail is not None]
    assert len(set(pids[:3])) == len(set(pids[3:])) == 1 and pids[0] != pids[3]
    errors = registry.get_sample_value("shadowtap_scorer_errors_total", {"scorer": "hostile"})
    assert errors == 1


async def test_a_cancelled_caller_does_not_cost_its_worker(
    session: aiohttp.ClientSession,
) -> None:
    sleepy = Sleepy("sleepy", ScorerOptions(type="sleepy"))
    runner = ScoringRunner([sleepy], Metrics(), session, CpuSettings(processes=1))
    ((warm,),) = [await runner.score(answered("warm"))]
    abandoned = asyncio.ensure_future(runner.score(answered("abandoned")))
    await asyncio.sleep(0.1)  # on the worker now, 0.2 s to go
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    ((after,),) = [await runner.score(answered("after"))]
    await runner.close()
    assert after.score == 1.0 and after.detail is not None and warm.detail is not None
    assert after.detail["pid"] == warm.detail["pid"]  # the same worker: nobody killed it


async def test_workers_start_on_demand(session: aiohttp.ClientSession) -> None:
    sleepy = Sleepy("sleepy", ScorerOptions(type="sleepy"))
    runner = ScoringRunner([sleepy], Metrics(), session, CpuSettings(processes=2))
    pool = pool_of(runner)
    await asyncio.sleep(0.5)
    assert pool.alive == 0 and not worker_pids()
    for text in ("one", "two", "three"):
        await runner.score(answered(text))
    assert pool.alive == 1  # one at a time: one worker is enough
    await asyncio.gather(*(runner.score(answered(f"burst {i}")) for i in range(6)))
    assert pool.alive == 2  # jobs queued behind a busy worker: the second slot started
    await runner.close()
    assert not worker_pids()


async def test_an_idle_proxy_runs_no_scoring_worker(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    config = make_config(
        primary,
        {"c": candidate},
        server={"scoring_processes": 2},
        scorers={"sim": {"type": "text_similarity"}},
    )
    server = await start_shadowtap(config)
    await asyncio.sleep(1.0)  # a worker started eagerly would be up by now
    assert not worker_pids()
    await post(server.proxy_port, CHAT)
    await drain(server)
    assert len(worker_pids()) == 1


async def test_a_worker_imports_what_its_scorers_need_and_no_more(
    session: aiohttp.ClientSession,
) -> None:
    scorers = [Imports("imports", ScorerOptions(type="imports"))]
    runner = ScoringRunner(scorers, Metrics(), session, CpuSettings(processes=1))
    ((score,),) = [await runner.score(answered("which modules?"))]
    await runner.close()
    assert score.detail is not None
    modules = set(score.detail["modules"])
    assert "pydantic" in modules  # the scorers' options are pydantic models
    # Nothing of the proxy: no server, client, storage, metrics or config modules.
    proxy_side = {"aiohttp", "duckdb", "pyarrow", "prometheus_client", "structlog", "rich"}
    assert not modules & proxy_side
    assert {m for m in modules if m.startswith("shadowtap.")} <= {
        "shadowtap.completion",
        "shadowtap.scorers",
        "shadowtap.scorers.base",
        "shadowtap.scorers.worker",
    }
    # The options' validators are never built in a worker (defer_build): building them
    # imported pydantic's plug-in loader and with it importlib.metadata, email and zipfile.
    assert not modules & {"email", "zipfile", "csv"}


async def test_a_worker_that_dies_idle_leaves_the_next_job_to_the_live_one(
    session: aiohttp.ClientSession,
) -> None:
    sleepy = Sleepy("sleepy", ScorerOptions(type="sleepy"))
    runner = ScoringRunner([sleepy], Metrics(), session, CpuSettings(processes=2))
    pool = pool_of(runner)
    pool.start()
    await eventually(lambda: pool.alive == 2, timeout_s=60)
    jobs = [runner.score(answered(f"warm {i}")) for i in range(2)]
    finished = [(await job)[0] for job in asyncio.as_completed(jobs)]
    pids = [s.detail["pid"] for s in finished if s.detail is not None]
    assert len(set(pids)) == 2  # two workers, both idle now; the first one first in line
    os.kill(pids[0], signal.SIGKILL)
    await eventually(lambda: pool.alive == 1)
    (after,) = await runner.score(answered("next"))
    await runner.close()
    assert after.detail is not None
    assert after.detail["pid"] == pids[1]  # not a replacement: the live worker took it at once
