"""How fast and how far a replay may go: the request pacer, the spend budgets, the failure
guard and the candidate's own `Retry-After`.

All of them are plain objects driven by the run loop; none sends anything. Time comes from an
injectable monotonic clock so the schedule itself can be checked.

Example:

    pacer = Pacer(rps=20)
    await pacer.wait()                     # returns at t0, t0 + 50 ms, t0 + 100 ms, ...
    budget = Budget(max_cost_usd=5.0, max_tokens=None)
    budget.stop_reason(in_flight=4)        # None while 4 more average requests fit
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from shadowtap.budget import TokenBucket

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# A candidate asking for a longer pause than this stops the run instead (it is resumable).
MAX_RETRY_AFTER_S = 120.0
# Without a usable Retry-After, a 429/503 waits this long, doubling per consecutive one.
DEFAULT_BACKOFF_S = 1.0
RETRY_STATUSES = frozenset({429, 503})


class Pacer:
    """Releases at most `rps` requests per second on a fixed schedule: slot i at t0 + i / rps.

    A token bucket holding one request (`shadowtap.budget.TokenBucket`, reserved ahead): a
    wake-up a little late does not shift the slots after it, so the long-run rate stays
    exactly `rps`; a caller a whole interval or more behind the schedule (a long stall, every
    concurrency slot busy) gets its slot now and the schedule goes on from there, never
    bursting to catch up. So no second ever holds more than `rps` + 1 releases. `None`: no
    pacing.
    """

    def __init__(
        self, rps: float | None, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        if rps is not None and not (math.isfinite(rps) and rps > 0):
            raise ValueError(f"--rps must be a positive number (got {rps})")
        self._bucket = None if rps is None else TokenBucket(rps, 1.0, clock)
        self._clock = clock
        self._sleep = sleep
        self._hold = float("-inf")
        self._first: float | None = None
        self._last: float | None = None
        self.released = 0

    async def wait(self) -> float:
        """Wait for the next slot; returns the slot's scheduled time (the clock's units)."""
        now = self._clock()
        earliest = max(now, self._hold)
        # Never before now: a caller behind the schedule is not made up for with a burst.
        slot = earliest if self._bucket is None else self._bucket.reserve(1.0, earliest)
        if self._first is None:
            self._first = slot
        self._last = slot
        if slot > now:
            await self._sleep(slot - now)
        self.released += 1
        return slot

    def achieved_rps(self) -> float | None:
        """Releases per second over the run's schedule (first slot to last); None without
        pacing or under two releases."""
        if (
            self._bucket is None
            or self._first is None
            or self._last is None
            or self._last <= self._first
        ):
            return None
        return (self.released - 1) / (self._last - self._first)

    def defer(self, until: float) -> None:
        """No slot before `until` (the candidate's Retry-After): every request waits."""
        self._hold = max(self._hold, until)


class Budget:
    """`--max-cost-usd` and `--max-tokens`, counted from the candidate's reported usage.

    A request is started only while the spend so far plus the average cost of one answer for
    each request in flight (itself included) stays within the budget, so the run stops before
    the request that would pass it; requests already in flight still finish and count. Before
    the first answer the cost of one is unknown: up to `--concurrency` requests start.
    """

    def __init__(self, max_cost_usd: float | None, max_tokens: int | None) -> None:
        for name, value in (("--max-cost-usd", max_cost_usd), ("--max-tokens", max_tokens)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number (got {value})")
        self.max_cost_usd = max_cost_usd
        self.max_tokens = max_tokens
        self.cost_usd = 0.0
        self.tokens = 0
        self.answers = 0  # answers counted (with or without usage)
        self.without_usage = 0  # answers that reported no token usage: spend is a lower bound

    def add(self, cost_usd: float | None, prompt: int | None, completion: int | None) -> None:
        self.answers += 1
        if prompt is None and completion is None:
            self.without_usage += 1
        self.tokens += max(0, prompt or 0) + max(0, completion or 0)
        if cost_usd is not None and math.isfinite(cost_usd):
            self.cost_usd += max(0.0, cost_usd)

    def stop_reason(self, in_flight: int) -> str | None:
        """Why no further request may start now, or None."""
        ahead = in_flight + 1
        average_cost = self.cost_usd / self.answers if self.answers else 0.0
        average_tokens = self.tokens / self.answers if self.answers else 0.0
        slack = 1e-9  # 0.1 + 0.2 must not stop a run one request early
        if self.max_cost_usd is not None and (
            self.cost_usd + ahead * average_cost > self.max_cost_usd + slack
            or self.cost_usd >= self.max_cost_usd
        ):
            return (
                f"cost budget reached: ${self.cost_usd:.4f} spent of --max-cost-usd "
                f"{self.max_cost_usd:g}"
            )
        if self.max_tokens is not None and (
            self.tokens + ahead * average_tokens > self.max_tokens + slack
            or self.tokens >= self.max_tokens
        ):
            return (
                f"token budget reached: {self.tokens:,} tokens of --max-tokens {self.max_tokens:,}"
            )
        return None


class FailureGuard:
    """Stops a run against a candidate that keeps failing, before it burns the budget.

    Every attempt counts (a 429 that is retried too); one good answer resets the streak.
    """

    def __init__(self, max_consecutive: int) -> None:
        if max_consecutive < 1:
            raise ValueError(f"--max-consecutive-errors must be 1 or more (got {max_consecutive})")
        self.max_consecutive = max_consecutive
        self.streak = 0
        self.rate_limited = 0  # 429s within the streak

    def observe(self, ok: bool, status: int | None) -> str | None:
        """Count one attempt; return why the run must stop, or None."""
        if ok:
            self.streak = self.rate_limited = 0
            return None
        self.streak += 1
        self.rate_limited += status == 429
        if self.streak < self.max_consecutive:
            return None
        if self.rate_limited * 2 > self.streak:
            return (
                f"the candidate is rate-limiting: {self.streak} consecutive failed attempts, "
                f"{self.rate_limited} of them 429; run again with a lower --rps"
            )
        return (
            f"the candidate keeps failing: {self.streak} consecutive errors "
            f"(last status {status if status is not None else 'none: no HTTP answer'})"
        )


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delay-seconds or an HTTP date); None when
    absent or unreadable. Never negative; huge values are returned as they are (the caller
    decides whether to wait that long)."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def backoff_s(value: float | None, attempt: int) -> float:
    """The wait before retry number `attempt` (1-based): the candidate's Retry-After when it
    gave one, else DEFAULT_BACKOFF_S doubling per attempt."""
    if value is not None:
        return value
    return DEFAULT_BACKOFF_S * 2 ** (attempt - 1)
