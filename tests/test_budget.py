"""The byte and time budgets of shadow work: pure accounting, a fake clock where time counts."""

from __future__ import annotations

import asyncio
import time

from shadowtap.budget import ADMIT_SHARE, MemoryBudget, Pace


def test_memory_admits_below_its_watermark_and_answers_use_the_rest() -> None:
    budget = MemoryBudget(1000)
    first = budget.admit(int(1000 * ADMIT_SHARE))
    assert first is not None
    assert budget.admit(1) is None  # new exchanges stop at the watermark...
    assert first.grow(1000 - int(1000 * ADMIT_SHARE))  # ...admitted ones may fill the rest
    assert not first.grow(1)  # never past the limit
    assert budget.held == 1000
    first.shrink(400)
    assert budget.held == 600 and first.size == 600


def test_a_hold_gives_everything_back_exactly_once() -> None:
    budget = MemoryBudget(1000)
    hold = budget.admit(100)
    assert hold is not None and hold.grow(50)
    hold.force(5000)  # already in memory: counted even over the limit
    assert budget.held == 5150 and budget.admit(1) is None
    hold.close()
    hold.close()
    assert budget.held == 0
    assert not hold.grow(1)  # a closed hold takes nothing
    hold.shrink(10)
    assert budget.held == 0


def test_zero_means_no_memory_limit() -> None:
    budget = MemoryBudget(0)
    hold = budget.admit(10**12)
    assert hold is not None and hold.grow(10**12)


def busy(seconds: float) -> None:
    """Hold the loop like parsing does."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_target_reading_over_its_byte_rate_owes_until_it_slows_down() -> None:
    clock = Clock()
    pace = Pace(bytes_per_second=1000, burst_bytes=1000, loop_share=0, clock=clock)
    await pace.read(400)  # within the burst: a healthy answer is not even noticed
    assert not pace.owes()
    await pace.read(200)  # over half the burst spent: new shadows to it are shed
    assert pace.owes()
    clock.now += 0.1
    assert not pace.owes()  # 100 bytes back at 1000/s
    await pace.read(2000)  # into debt: the next read waits ~1.6 s
    clock.now += 2.0
    assert not pace.owes()


async def test_a_reader_in_debt_waits_before_reading_on() -> None:
    pace = Pace(bytes_per_second=10_000, burst_bytes=1000, loop_share=0)
    await pace.read(1000)
    await pace.read(500)  # 500 bytes in debt: the next read waits until a quarter of the
    loop = asyncio.get_running_loop()  # burst is back, 750 bytes at 10,000 a second
    started = loop.time()
    await pace.read(1)
    assert loop.time() - started >= 0.07
    assert pace.waited_s >= 0.07


async def test_loop_share_is_charged_with_the_time_parsing_took() -> None:
    clock = Clock()
    pace = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0.01, clock=clock)
    with await pace.turn() as turn:
        turn.add(10**6)
        busy(0.002)
    assert not pace.owes()  # within the 50 ms burst
    with await pace.turn() as turn:
        turn.add(10**6)
        busy(0.05)
    assert pace.owes()
    clock.now += 100  # at 1% of the loop, 100 s repay a second of parsing
    assert not pace.owes()


async def test_a_slice_is_never_charged_more_than_its_bytes_could_cost() -> None:
    clock = Clock()
    pace = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0.01, clock=clock)
    for _ in range(3):
        with await pace.turn() as turn:  # at most ~1.25 ms, however long the process slept
            turn.add(4096)
            busy(0.03)
    assert not pace.owes()


async def test_one_target_parses_one_slice_at_a_time() -> None:
    pace = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0)
    order: list[str] = []

    async def slice_of(name: str) -> None:
        with await pace.turn():
            order.append(f"{name}+")
            await asyncio.sleep(0)  # even if a slice yielded, no other slice would start
            order.append(f"{name}-")

    await asyncio.gather(slice_of("a"), slice_of("b"), slice_of("c"))
    assert order == ["a+", "a-", "b+", "b-", "c+", "c-"]


def test_unlimited_pace_never_owes() -> None:
    pace = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0)
    assert not pace.owes()


async def test_a_turn_is_taken_at_once_only_when_no_reader_waits_and_nothing_is_owed() -> None:
    clock = Clock()
    pace = Pace(bytes_per_second=0, burst_bytes=0, loop_share=0.5, clock=clock)
    turn = pace.turn_now()  # nothing owed, nobody waiting: no await, and charged all the same
    assert turn is not None
    with turn:
        turn.add(10**6)
        busy(0.06)
    assert pace.turn_now() is None  # owes loop time: the caller must wait for its turn
    waiting = asyncio.ensure_future(pace.turn())
    await asyncio.sleep(0)  # holds the lock while it waits for the debt to be repaid
    clock.now += 100
    assert pace.turn_now() is None  # repaid, but a reader queued first: it goes first
    with await waiting:
        pass
    assert pace.turn_now() is not None


async def test_a_read_is_counted_at_once_only_within_the_byte_rate() -> None:
    clock = Clock()
    pace = Pace(bytes_per_second=1000, burst_bytes=1000, loop_share=0, clock=clock)
    assert pace.read_now(1500)  # within the rate so far: counted, now 500 bytes in debt
    assert pace.owes()
    assert not pace.read_now(1)  # in debt: not counted here, the caller awaits read()
    clock.now += 0.75  # repaid up to a quarter of the burst
    assert pace.read_now(1)
