"""ScoringRunner: pairs, the N/A rule, error counting, per-scorer rate, off-process execution."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import Completion
from shadowtap.exchange import Exchange, Score
from shadowtap.metrics import Metrics
from shadowtap.scorers.base import CpuScorer, ScorerOptions
from shadowtap.scorers.runner import ScoringRunner, sampled

from tests.exchanges import chat_exchange
from tests.scorer_plugins import OutOfRange, Raises, Sleepy
from tests.scorer_tables import scorers_from

SCHEMA_REQUEST = {
    "messages": [{"role": "user", "content": "q"}],
    "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
}


def ok(text: str) -> Completion:
    return Completion(status=200, text=text)


def exchange(request_id: str = "r1", **shadows: Completion) -> Exchange:
    return chat_exchange(
        {"primary": ok('{"a": 1}'), **shadows}, SCHEMA_REQUEST, request_id=request_id
    )


def custom(cls: type[CpuScorer[Any]], name: str) -> CpuScorer[Any]:
    return cls(name, ScorerOptions(type=name))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def test_every_scorer_sees_every_shadow_and_metrics_are_observed(
    session: aiohttp.ClientSession, registry: CollectorRegistry
) -> None:
    scorers = scorers_from(
        {
            "exact": {"type": "exact_match"},
            "fields": {"type": "json_match", "threshold": 0.9},
            "schema": {"type": "json_schema_valid"},
        }
    )
    runner = ScoringRunner(scorers, Metrics(registry), session)
    scores = await runner.score(exchange(secondary=ok('{"a": 1}'), cand=ok('{"a": 2}')))
    await runner.close()
    got = {(s.target, s.scorer): s.score for s in scores}
    assert got == {
        ("secondary", "exact"): 1.0,
        ("cand", "exact"): 0.0,
        ("secondary", "fields"): 1.0,
        ("cand", "fields"): 0.0,
        ("primary", "schema"): 1.0,  # per-response: the primary on its own
        ("secondary", "schema"): 1.0,
        ("cand", "schema"): 1.0,
    }
    assert all(s.threshold is not None and s.error is None for s in scores)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("shadowtap_agreement_score_count", target="cand", scorer="fields") == 1
    assert sample("shadowtap_agreement_score_count", target="primary", scorer="schema") == 1
    assert sample("shadowtap_disagreements_total", target="cand", scorer="fields") == 1
    assert sample("shadowtap_disagreements_total", target="secondary", scorer="fields") is None


async def test_a_failed_side_makes_the_pair_not_applicable(
    session: aiohttp.ClientSession, registry: CollectorRegistry
) -> None:
    scorers = scorers_from(
        {"exact": {"type": "exact_match"}, "schema": {"type": "json_schema_valid"}}
    )
    runner = ScoringRunner(scorers, Metrics(registry), session)
    failed = Completion(status=500, error="HTTP 500")
    timed_out = Completion(status=None, error="timeout")
    scores = await runner.score(exchange(cand=failed, secondary=timed_out))
    by_key = {(s.target, s.scorer): s for s in scores}
    assert by_key["cand", "exact"] == Score(
        "cand", "exact", None, {"reason": "target errored"}, None, 0.8
    )
    assert by_key["secondary", "schema"].detail == {"reason": "target errored"}
    assert by_key["primary", "schema"].score == 1.0  # the primary's own answer is still judged

    broken_primary = exchange(cand=ok("x"))
    broken_primary.results["primary"].completion = Completion(status=502, error="HTTP 502")
    scores = await runner.score(broken_primary)
    await runner.close()
    assert {(s.target, s.scorer): s.detail for s in scores} == {
        ("primary", "schema"): {"reason": "target errored"},
        ("cand", "exact"): {"reason": "primary errored"},
        # Per-response: the candidate's own answer is judged even when the primary failed.
        ("cand", "schema"): {"valid": False, "error": "not JSON"},
    }
    assert registry.get_sample_value("shadowtap_scorer_errors_total", {"scorer": "exact"}) is None


async def test_raising_and_malformed_scorers_are_counted_never_propagated(
    session: aiohttp.ClientSession, registry: CollectorRegistry
) -> None:
    scorers = [
        custom(Raises, "raises"),
        custom(OutOfRange, "range"),
        *scorers_from({"e": {"type": "exact_match"}}),
    ]
    runner = ScoringRunner(scorers, Metrics(registry), session)
    scores = await runner.score(exchange(cand=ok('{"a": 1}')))
    await runner.close()
    by_scorer = {s.scorer: s for s in scores}
    assert by_scorer["raises"].score is None and by_scorer["raises"].error == "RuntimeError: boom"
    assert by_scorer["range"].error == "ValueError: score must be in [0, 1] (got 1.5)"
    assert by_scorer["e"].score == 1.0  # the others still score
    for name in ("raises", "range"):
        assert registry.get_sample_value("shadowtap_scorer_errors_total", {"scorer": name}) == 1


async def test_no_primary_or_no_scorers_gives_no_scores(session: aiohttp.ClientSession) -> None:
    runner = ScoringRunner(scorers_from({"e": {"type": "exact_match"}}), Metrics(), session)
    headless = exchange(cand=ok("x"))
    del headless.results["primary"]
    assert await runner.score(headless) == []
    assert await ScoringRunner([], Metrics(), session).score(exchange(cand=ok("x"))) == []
    await runner.close()


async def test_rate_samples_whole_exchanges_deterministically(
    session: aiohttp.ClientSession,
) -> None:
    ids = [f"req-{i}" for i in range(2000)]
    share = sum(sampled(0.25, rid, "judge") for rid in ids) / len(ids)
    assert 0.2 < share < 0.3
    assert [sampled(0.25, rid, "judge") for rid in ids] == [
        sampled(0.25, rid, "judge") for rid in ids
    ]
    assert all(sampled(1.0, rid, "x") for rid in ids[:50])
    assert not any(sampled(0.0, rid, "x") for rid in ids[:50])

    runner = ScoringRunner(
        scorers_from({"e": {"type": "exact_match", "rate": 0.5}}), Metrics(), session
    )
    counts = []
    for rid in ids[:200]:
        scores = await runner.score(exchange(rid, cand=ok("x"), secondary=ok("y")))
        counts.append(len(scores))
    await runner.close()
    assert set(counts) == {0, 2}  # both targets of an exchange scored, or neither
    assert 60 < counts.count(2) < 140


async def test_cpu_scorers_run_in_worker_processes_off_the_event_loop(
    session: aiohttp.ClientSession,
) -> None:
    runner = ScoringRunner([custom(Sleepy, "slow")], Metrics(), session)
    (warm,) = await runner.score(exchange(cand=ok("warm-up")))  # the start is not the point
    assert warm.detail is not None
    # Background work: the kernel favours the proxy's event loop over a scoring worker.
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, warm.detail["pid"]) == min(19, ours + 10)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    tick = asyncio.ensure_future(ticker())
    scores = await runner.score(exchange(cand=ok("a"), secondary=ok("b")))
    tick.cancel()
    await runner.close()
    assert [s.score for s in scores] == [1.0, 1.0]
    assert all(s.detail is not None and s.detail["pid"] != os.getpid() for s in scores)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # 0.6 s of scoring on the loop would leave one 0.6 s gap; a loaded machine stays far below.
    assert len(ticks) > 20 and max(gaps) < 0.3
