"""The replay's pacer, budgets, failure guard and Retry-After parsing, on a simulated clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shadowtap.budget import TokenBucket
from shadowtap.replay.pacing import Budget, FailureGuard, Pacer, backoff_s, retry_after_s


class SimulatedTime:
    """A monotonic clock that only moves when slept on, plus lateness the test adds (a busy
    event loop waking up late)."""

    def __init__(self, lateness: list[float] | None = None) -> None:
        self.now = 1000.0
        self.lateness = list(lateness or [])

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + (self.lateness.pop() if self.lateness else 0.0)


def most_in_any_second(times: list[float]) -> int:
    # 1e-9: slots are sums of floats, and 1000.25 + 20 x 0.05 is not exactly 1001.25
    return max(sum(1 for t in times[i:] if t - start < 1.0 - 1e-9) for i, start in enumerate(times))


@given(st.lists(st.floats(0.0, 0.2), min_size=200, max_size=200), st.sampled_from([5.0, 20.0]))
def test_the_schedule_never_runs_ahead_and_keeps_the_rate_through_late_wakeups(
    lateness: list[float], rps: float
) -> None:
    time = SimulatedTime(lateness)
    pacer = Pacer(rps, clock=time.clock, sleep=time.sleep)
    released = []

    async def release_all() -> None:
        for _ in range(200):
            await pacer.wait()
            released.append(time.now)  # when the caller actually got to send

    asyncio.run(release_all())
    # Slots are rps apart: a late wake-up is absorbed by the next slot, not added to it, and
    # being later than one whole interval restarts the schedule rather than bursting.
    assert most_in_any_second(released) <= rps + 1
    assert pacer.achieved_rps() is not None and pacer.achieved_rps() <= rps + 1e-9


async def test_a_late_wakeup_is_not_made_up_with_a_burst() -> None:
    time = SimulatedTime([0.0] * 40 + [0.2])  # pop() takes from the end: the first sleep is late
    pacer = Pacer(20, clock=time.clock, sleep=time.sleep)
    released = []
    for _ in range(40):
        await pacer.wait()
        released.append(time.now)
    assert most_in_any_second(released) <= 21


async def test_small_lateness_costs_no_rate() -> None:
    time = SimulatedTime([0.01] * 200)  # every wake-up 10 ms late, under one 50 ms interval
    pacer = Pacer(20, clock=time.clock, sleep=time.sleep)
    for _ in range(101):
        await pacer.wait()
    assert pacer.achieved_rps() == pytest.approx(20.0)


async def test_a_stall_does_not_become_a_burst() -> None:
    time = SimulatedTime()
    pacer = Pacer(10, clock=time.clock, sleep=time.sleep)
    await pacer.wait()
    time.now += 5.0  # e.g. every concurrency slot was busy for 5 s
    first = await pacer.wait()
    second = await pacer.wait()
    assert first == pytest.approx(time.now - 0.1) and second - first == pytest.approx(0.1)


async def test_retry_after_holds_every_release_and_no_pacing_means_none() -> None:
    time = SimulatedTime()
    pacer = Pacer(None, clock=time.clock, sleep=time.sleep)
    assert await pacer.wait() == 1000.0 and await pacer.wait() == 1000.0
    pacer.defer(1002.5)
    assert await pacer.wait() == 1002.5 and time.now == 1002.5
    paced = Pacer(100, clock=time.clock, sleep=time.sleep)
    await paced.wait()
    paced.defer(time.now + 1.0)
    assert await paced.wait() == pytest.approx(1003.5)


def test_a_bucket_reserved_ahead_allows_its_burst_then_keeps_the_rate() -> None:
    # The pacer is this with a capacity of one; the proxy's Pace spends from the same bucket.
    time = SimulatedTime()
    bucket = TokenBucket(rate=2.0, capacity=3.0, clock=time.clock)
    start = time.now
    assert [bucket.reserve(1.0, start) for _ in range(5)] == [
        start,
        start,
        start,
        start + 0.5,
        start + 1.0,
    ]
    # A long pause refills the burst and no more: three at once again, then the rate.
    later = start + 100.0
    assert [bucket.reserve(1.0, later) for _ in range(4)] == [later, later, later, later + 0.5]
    # A reservation never lands before the one already made, whatever `earliest` says.
    assert bucket.reserve(1.0, start) == later + 1.0


def test_budget_arithmetic() -> None:
    budget = Budget(max_cost_usd=0.01, max_tokens=100)
    budget.add(0.003, 10, 10)
    budget.add(0.003, 10, 10)
    assert budget.stop_reason(in_flight=0) is None  # 0.006 + 0.003 <= 0.01
    assert budget.stop_reason(in_flight=1) is not None  # 0.006 + 2 x 0.003 > 0.01
    budget.add(None, None, None)  # an answer without usage counts as an answer, costs nothing
    assert budget.without_usage == 1 and budget.tokens == 40
    tokens = Budget(max_cost_usd=None, max_tokens=100)
    tokens.add(None, 30, 20)
    assert tokens.stop_reason(0) is None
    tokens.add(None, 30, 20)
    assert tokens.stop_reason(0) == "token budget reached: 100 tokens of --max-tokens 100"
    hostile = Budget(max_cost_usd=1.0, max_tokens=10)
    hostile.add(float("nan"), -5, -5)  # a candidate's nonsense usage never lowers the spend
    assert hostile.cost_usd == 0.0 and hostile.tokens == 0


def test_failure_guard_counts_a_streak_and_names_a_rate_limit() -> None:
    guard = FailureGuard(3)
    assert guard.observe(False, 500) is None and guard.observe(False, None) is None
    assert guard.observe(True, 200) is None  # one good answer resets the streak
    assert [guard.observe(False, 502) for _ in range(3)][-1] == (
        "the candidate keeps failing: 3 consecutive errors (last status 502)"
    )
    limited = FailureGuard(3)
    results = [limited.observe(False, 429) for _ in range(3)]
    assert results[-1] is not None and "rate-limiting" in results[-1]


def test_retry_after_values() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s(" 0 ", now) == 0.0
    assert retry_after_s("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert retry_after_s("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0  # in the past
    for junk in (None, "", "-5", "1.5e9", "soon", "9" * 500, "Wed, 99 Foo 2025"):
        assert retry_after_s(junk, now) is None
    assert retry_after_s("99999999999", now) == 99999999999.0  # huge: the caller caps it
    assert [backoff_s(None, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff_s(0.0, 3) == 0.0
