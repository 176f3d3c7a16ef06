"""The batched pool attacked: batches at the byte bound, a worker killed from outside mid-batch,
`close()` with a batch on a worker and jobs queued, a caller cancelled while queued. Every
caller gets an outcome, nothing hangs, each failed pair counts once. Real worker processes,
real plug-in scorers."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.exchange import Score
from shadowtap.metrics import Metrics
from shadowtap.scorers import pool as pool_module
from shadowtap.scorers.base import ScorerOptions
from shadowtap.scorers.pool import CpuSettings
from shadowtap.scorers.runner import ScoringRunner

from tests.pool_support import answered, hostile, pool_of
from tests.scorer_plugins import Sleepy
from tests.waiting import eventually

HANG_GUARD_S = 60  # not a speed bound: only so that a hang fails instead of stalling the suite


def errors(registry: CollectorRegistry, scorer: str = "hostile") -> float | None:
    return registry.get_sample_value("shadowtap_scorer_errors_total", {"scorer": scorer})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_batches_split_at_the_byte_bound_and_a_job_over_it_goes_alone(
    session: aiohttp.ClientSession,
) -> None:
    half = pool_module.MAX_BATCH_BYTES // 2
    settings = CpuSettings(processes=1, max_pair_chars=4 * pool_module.MAX_BATCH_BYTES)
    runner = ScoringRunner([hostile(timeout_s=60)], Metrics(), session, settings)
    # Two jobs whose pickles together are just over the bound, then one over it on its own.
    texts = ["a" * half, "b" * half, "c" * (pool_module.MAX_BATCH_BYTES + 1)]
    results = await asyncio.wait_for(
        asyncio.gather(*(runner.score(answered(text)) for text in texts)), HANG_GUARD_S
    )
    pool = pool_of(runner)
    await runner.close()
    assert [s.score for (s,) in results] == [1.0, 1.0, 1.0]
    assert (pool.batches_sent, pool.jobs_sent) == (3, 3)


async def test_a_worker_killed_from_outside_mid_batch_costs_one_pair_counted_once(
    session: aiohttp.ClientSession,
) -> None:
    registry = CollectorRegistry()
    runner = ScoringRunner(
        [hostile(timeout_s=60)], Metrics(registry), session, CpuSettings(processes=1)
    )
    texts = [f"fine {i}" for i in range(8)]
    texts[3] = "sleep"  # 60 s: on the worker when it is killed
    jobs = [asyncio.ensure_future(runner.score(answered(text))) for text in texts]
    await eventually(lambda: all(job.done() for job in jobs[:3]), timeout_s=HANG_GUARD_S)
    pool = pool_of(runner)
    assert pool.batches_sent == 1  # the eight together: the kill lands mid-batch
    (first,) = jobs[0].result()
    assert first.detail is not None
    os.kill(first.detail["pid"], signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*jobs), HANG_GUARD_S)
    await runner.close()
    scores: list[Score] = [score for (score,) in results]
    killed = scores.pop(3)
    assert killed.score is None and killed.error is not None
    assert killed.error.startswith("WorkerDied")
    assert [s.score for s in scores] == [1.0] * 7
    assert pool.batches_sent == 2  # the four after the killed one, on the replacement
    assert errors(registry) == 1


async def test_close_with_a_batch_on_a_worker_and_jobs_queued_answers_every_caller(
    session: aiohttp.ClientSession,
) -> None:
    registry = CollectorRegistry()
    runner = ScoringRunner(
        [hostile(timeout_s=60)], Metrics(registry), session, CpuSettings(processes=1)
    )
    pool = pool_of(runner)
    on_worker = [asyncio.ensure_future(runner.score(answered(t))) for t in ("sleep", "fine")]
    await eventually(lambda: pool.batches_sent == 1, timeout_s=HANG_GUARD_S)
    queued = [asyncio.ensure_future(runner.score(answered(f"fine {i}"))) for i in range(5)]
    await asyncio.sleep(0)  # queued behind the busy worker
    await asyncio.wait_for(runner.close(), HANG_GUARD_S)
    results = await asyncio.wait_for(asyncio.gather(*on_worker, *queued), HANG_GUARD_S)
    scores = [score for (score,) in results]
    assert all(s.score is None and s.error is not None for s in scores)
    assert all(s.error is not None and "PoolUnavailable" in s.error for s in scores[1:])
    assert errors(registry) == len(scores)  # each once
    assert pool.alive == 0


async def test_a_caller_cancelled_while_queued_is_never_sent(
    session: aiohttp.ClientSession,
) -> None:
    sleepy = Sleepy("sleepy", ScorerOptions(type="sleepy"))
    runner = ScoringRunner([sleepy], Metrics(), session, CpuSettings(processes=1))
    pool = pool_of(runner)
    busy = asyncio.ensure_future(runner.score(answered("busy")))
    await eventually(lambda: pool.batches_sent == 1, timeout_s=HANG_GUARD_S)
    abandoned = asyncio.ensure_future(runner.score(answered("abandoned")))
    await asyncio.sleep(0)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    ((done,), (after,)) = await asyncio.wait_for(
        asyncio.gather(busy, runner.score(answered("after"))), HANG_GUARD_S
    )
    await runner.close()
    assert done.score == after.score == 1.0
    assert pool.jobs_sent == 2  # "busy" and "after": the cancelled job never left the queue
