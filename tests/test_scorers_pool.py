"""The scoring worker pool: time limits that kill, crashes that are survived, bounded queues
and payloads, a prompt shutdown. Real worker processes, real plug-in scorers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import Completion
from shadowtap.config import ConfigError, parse_config
from shadowtap.exchange import Exchange, Score
from shadowtap.metrics import Metrics
from shadowtap.scorers.base import CpuScorer, ScorerOptions
from shadowtap.scorers.pool import CpuSettings
from shadowtap.scorers.runner import ScoringRunner

from tests.exchanges import chat_exchange
from tests.scorer_plugins import FailsInWorker, Hostile, NotPicklable, SeesRequest
from tests.scorer_tables import scorers_from

ROOT = Path(__file__).resolve().parent.parent


def hostile(timeout_s: float = 0.5) -> CpuScorer[Any]:
    return Hostile("hostile", ScorerOptions(type="hostile", timeout_s=timeout_s))


def answered(text: str, request: dict[str, Any] | None = None) -> Exchange:
    answers = {
        "primary": Completion(status=200, text="q"),
        "cand": Completion(status=200, text=text),
    }
    return chat_exchange(answers, request)


def errors(registry: CollectorRegistry, scorer: str) -> float | None:
    return registry.get_sample_value("shadowtap_scorer_errors_total", {"scorer": scorer})


def skips(registry: CollectorRegistry, scorer: str) -> float | None:
    return registry.get_sample_value("shadowtap_scorer_skipped_total", {"scorer": scorer})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def only(runner: ScoringRunner, exchange: Exchange, scorer: str = "hostile") -> Score:
    (score,) = [s for s in await runner.score(exchange) if s.scorer == scorer]
    return score


@pytest.mark.parametrize("behaviour", ["spin", "sleep"])
async def test_a_scorer_over_its_time_limit_is_killed_and_its_worker_replaced(
    session: aiohttp.ClientSession, behaviour: str
) -> None:
    registry = CollectorRegistry()
    exact = scorers_from({"exact": {"type": "exact_match"}})
    runner = ScoringRunner(
        [*exact, hostile()], Metrics(registry), session, CpuSettings(processes=1)
    )
    before = await only(runner, answered("fine"))
    assert before.score == 1.0 and before.detail is not None
    scores = await runner.score(answered(behaviour))
    by_scorer = {s.scorer: s for s in scores}
    assert by_scorer["hostile"].error == "TimeoutError: timed out after 0.5 s"
    assert by_scorer["hostile"].score is None
    assert by_scorer["exact"].score == 0.0  # the job's other tasks still ran
    assert errors(registry, "hostile") == 1
    after = await only(runner, answered("fine again"))
    await runner.close()
    assert after.score == 1.0 and after.detail is not None
    assert after.detail["pid"] != before.detail["pid"]  # a new worker scored it
    with pytest.raises(ProcessLookupError):
        os.kill(before.detail["pid"], 0)  # and the old one is gone


@pytest.mark.parametrize(("behaviour", "code"), [("exit", 7), ("segv", -11)])
async def test_a_dying_worker_is_an_error_and_is_replaced(
    session: aiohttp.ClientSession, behaviour: str, code: int
) -> None:
    registry = CollectorRegistry()
    runner = ScoringRunner(
        [hostile(timeout_s=30)], Metrics(registry), session, CpuSettings(processes=1)
    )
    assert await runner.wait_ready() is True
    died = await only(runner, answered(behaviour))
    assert died.error == f"WorkerDied: scoring worker process died (exit code {code})"
    assert errors(registry, "hostile") == 1
    after = await only(runner, answered("fine"))
    await runner.close()
    assert after.score == 1.0


async def test_a_full_queue_sheds_jobs_as_counted_skips(session: aiohttp.ClientSession) -> None:
    registry = CollectorRegistry()
    settings = CpuSettings(processes=1, queue_max=1)
    runner = ScoringRunner([hostile(timeout_s=2)], Metrics(registry), session, settings)
    await only(runner, answered("warm-up"))
    busy = asyncio.ensure_future(only(runner, answered("sleep")))  # holds the only worker 2 s
    await asyncio.sleep(0.2)
    queued = asyncio.ensure_future(only(runner, answered("queued")))  # waits: the queue's one place
    await asyncio.sleep(0.2)
    shed = await only(runner, answered("shed"))  # finds the queue full: answered at once
    assert shed == Score("cand", "hostile", None, {"skipped": "scoring queue full"}, None, 0.8)
    assert skips(registry, "hostile") == 1
    assert (await busy).error == "TimeoutError: timed out after 2 s"
    assert (await queued).score == 1.0  # the queued job ran on the replacement
    await runner.close()


async def test_pairs_over_the_size_bound_are_skipped_not_sent(
    session: aiohttp.ClientSession,
) -> None:
    registry = CollectorRegistry()
    scorers = [
        hostile(timeout_s=30),
        SeesRequest("sees", ScorerOptions(type="sees_request")),
        *scorers_from({"exact": {"type": "exact_match"}}),
    ]
    settings = CpuSettings(processes=1, max_pair_chars=1000)
    runner = ScoringRunner(scorers, Metrics(registry), session, settings)
    # An answer that would kill its worker, were it sent: it is over the bound, so it is not.
    by_scorer = {s.scorer: s for s in await runner.score(answered("exit" + "x" * 1000))}
    assert by_scorer["hostile"].detail == {"skipped": "pair over 1000 characters"}
    assert by_scorer["hostile"].error is None
    assert skips(registry, "hostile") == 1
    # The request body counts only for a scorer that reads the request.
    big_request = {"messages": [{"role": "user", "content": "y" * 1000}]}
    by_scorer = {s.scorer: s for s in await runner.score(answered("short", big_request))}
    assert by_scorer["sees"].detail == {"skipped": "pair over 1000 characters"}
    assert by_scorer["exact"].score == 0.0
    small_request = {"messages": [{"role": "user", "content": "y"}]}
    by_scorer = {s.scorer: s for s in await runner.score(answered("short", small_request))}
    await runner.close()
    assert by_scorer["sees"].detail == {"request": small_request}  # a plug-in sees the request


async def test_close_kills_a_worker_still_running(session: aiohttp.ClientSession) -> None:
    runner = ScoringRunner([hostile(timeout_s=600)], Metrics(), session, CpuSettings(processes=1))
    warm = await only(runner, answered("fine"))
    assert warm.detail is not None
    spinning = asyncio.ensure_future(only(runner, answered("spin")))
    await asyncio.sleep(0.3)
    # Bounded far below the task's 600 s limit: close() does not wait for it.
    await asyncio.wait_for(runner.close(), 30)
    with pytest.raises(ProcessLookupError):
        os.kill(warm.detail["pid"], 0)
    assert (await spinning).error is not None


async def test_workers_that_cannot_start_fail_jobs_fast(session: aiohttp.ClientSession) -> None:
    registry = CollectorRegistry()
    broken = FailsInWorker("broken", ScorerOptions(type="fails_in_worker"))
    runner = ScoringRunner([broken], Metrics(registry), session, CpuSettings(processes=1))
    assert await asyncio.wait_for(runner.wait_ready(), 60) is False
    score = await asyncio.wait_for(only(runner, answered("x"), "broken"), 60)
    await runner.close()
    assert score.error is not None
    assert score.error.startswith("PoolUnavailable: a scoring worker did not start")
    assert errors(registry, "broken") == 1


def test_a_cpu_scorer_that_cannot_pickle_stops_the_start() -> None:
    with pytest.raises(ConfigError, match=r"scorers\.np: a CPU scorer runs in a worker process"):
        ScoringRunner(
            [NotPicklable("np", ScorerOptions(type="not_picklable"))],
            Metrics(),
            session=None,  # type: ignore[arg-type]
        )


ORPHAN_SCRIPT = """
import asyncio, aiohttp
from shadowtap.completion import Completion
from shadowtap.metrics import Metrics
from shadowtap.scorers.base import ScorerOptions
from shadowtap.scorers.pool import CpuSettings
from shadowtap.scorers.runner import ScoringRunner
from tests.exchanges import chat_exchange
from tests.scorer_plugins import Hostile

async def main():
    scorer = Hostile("h", ScorerOptions(type="hostile", timeout_s=600))
    async with aiohttp.ClientSession() as session:
        runner = ScoringRunner([scorer], Metrics(), session, CpuSettings(processes=1))
        def ask(text):
            answers = {"primary": Completion(status=200, text="q"),
                       "c": Completion(status=200, text=text)}
            return runner.score(chat_exchange(answers))
        (score,) = await ask("fine")
        print(score.detail["pid"], flush=True)
        await ask("spin")

asyncio.run(main())
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has stopped; only its exit status waits)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_does_not_outlive_a_killed_proxy() -> None:
    proxy = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    assert proxy.stdout is not None
    pid = int(proxy.stdout.readline())
    try:
        time.sleep(0.5)  # the worker is spinning now, with 600 s to go
        assert running(pid)
        proxy.kill()  # SIGKILL: the proxy gets no chance to clean up
        proxy.wait()
        for _ in range(100):
            if not running(pid):
                break
            time.sleep(0.1)
        assert not running(pid)
    finally:
        proxy.stdout.close()
        if running(pid):  # the test failed: do not leave a spinning orphan behind
            os.kill(pid, signal.SIGKILL)


def test_server_config_maps_to_worker_settings() -> None:
    def settings(**server: object) -> CpuSettings:
        return CpuSettings.of(
            parse_config({"primary": {"url": "http://x"}, "server": server}).server
        )

    # 0 meant "threads"; threads cannot be stopped, so it now means the default.
    assert settings(scoring_processes=0) == settings() == CpuSettings()
    assert CpuSettings().processes == 2 and CpuSettings().timeout_s == 2.0
    assert settings(scoring_processes=3, scoring_timeout_s=0.5).processes == 3
    assert settings(scoring_timeout_s=0.5).timeout_s == 0.5
    with pytest.raises(ConfigError, match=r"server\.scoring_timeout_s"):
        settings(scoring_timeout_s=0)
    with pytest.raises(ConfigError, match=r"server\.scoring_queue_max"):
        settings(scoring_queue_max=0)
