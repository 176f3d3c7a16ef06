"""Byte and time budgets for shadow work: memory held, bytes read per second, loop time spent.

Shadowing must never cost the primary path more than a bounded share of the process, whatever
a client or a candidate sends. Counting requests is not enough (one 50 MB prompt weighs as
much as ten thousand small ones), so three budgets bound what shadow work may take:

`MemoryBudget` — bytes held for shadows, scoring and recording (`sampling.max_held_bytes`).
Each sampled exchange takes a `Hold` when it is admitted and grows it while answers are read;
a request that does not fit is not sampled, an answer that does not fit is cut. New exchanges
are admitted only below `ADMIT_SHARE` of the limit, so the exchanges already admitted keep
room for their answers instead of all being cut together.

`Pace` — per target, how fast its answers may be read (`sampling.max_read_bytes_per_second`)
and what share of the event loop parsing them may take (`sampling.max_loop_share`). Both are
token buckets that go into debt: a reader that overspent waits before it reads or parses
again, so TCP backpressure slows the target down and the loop stays free for the primary.
`TokenBucket` is the one token bucket of the code base: the replay's `--rps` pacer is one too.

Example:
    memory = MemoryBudget(256 * MiB)
    hold = memory.admit(len(body) * 2)      # None: shed, the request is not sampled
    if hold is not None and not hold.grow(len(chunk)):
        ...                                 # the answer no longer fits: cut it
    hold.close()                            # every byte back, once
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

MiB = 1024 * 1024
ADMIT_SHARE = 0.75  # new exchanges only below this share of the limit; answers may use the rest
LOOP_BURST_S = 0.05  # loop time a target may spend at once before its share applies
# The most parsing one byte can cost (a stream of `data: {}` events, ~280 ns a byte measured):
# the ceiling of what a turn is charged (see `Turn`).
WORST_NS_PER_BYTE = 300
TURN_OVERHEAD_S = 20e-6
TURN_S = 0.0005  # a turn ends after this long: the loop is never held much longer


# What one parsed JSON value costs in Python beside its text: a dict, list, str or number
# object (28-184 bytes) and its slot in the container. Measured on chat requests (messages
# of two keys) and on `[{},{},...]`, the worst case per input byte.
PARSED_VALUE_BYTES = 80


def request_hold_bytes(size: int, values: int, copies: int) -> tuple[int, int]:
    """What a sampled request of `size` bytes holds: (lasting, transient) bytes.

    Lasting: the raw body, kept until the exchange is recorded. Transient, given back once
    scoring is over: the parsed request (its text plus `values` times PARSED_VALUE_BYTES; it
    exists while shadow bodies are built and while scorers read it) and `copies` bodies
    translated into another API, about `size` each. A body that only changes `model` is the
    client's bytes around the new value (`shadow_request.Spliced`): no copy, no charge; the
    rare one re-encoded instead is charged when it is made (`Admission.charge`). Answers are
    charged as read.
    """
    return size, size + values * PARSED_VALUE_BYTES + copies * size


class MemoryBudget:
    """At most `limit` bytes held by all sampled exchanges together (0 = no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._admit_below = int(limit * ADMIT_SHARE)

    def admit(self, size: int) -> Hold | None:
        """A hold of `size` bytes for a new exchange, or None when it does not fit."""
        if self.limit and self.held + size > self._admit_below:
            return None
        self.held += size
        return Hold(self, size)

    def _grow(self, size: int) -> bool:
        if self.limit and self.held + size > self.limit:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


class Hold:
    """The bytes one exchange holds. `close` gives back whatever is left, exactly once."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: MemoryBudget, size: int) -> None:
        self._budget: MemoryBudget | None = budget
        self.size = size

    def grow(self, size: int) -> bool:
        """Take `size` more bytes; False (nothing taken) when the budget is full or closed."""
        if self._budget is None or not self._budget._grow(size):
            return False
        self.size += size
        return True

    def force(self, size: int) -> None:
        """Count `size` bytes already in memory, over the limit if need be (accounting must
        match what is held; admission stops until the budget drains)."""
        if self._budget is not None:
            self._budget.held += size
            self.size += size

    def shrink(self, size: int) -> None:
        size = min(size, self.size)
        if self._budget is not None and size > 0:
            self._budget.release(size)
            self.size -= size

    def close(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.release(self.size)
            self.size = 0


class TokenBucket:
    """A token bucket: `rate` tokens a second, holding at most `capacity`; the one budget of
    rate behind both the proxy's `Pace` and the replay's `Pacer`, used in one of two ways.

    Spend now, pay later (`spend`, `wait_s`, `strained`): the bucket may go into debt, and the
    spender waits until it is repaid. `Pace` uses it on the shadow read path, where a reader
    must not wait before the bytes it has already read are counted.

    Reserve ahead (`reserve`): the earliest moment from a given one at which an amount is in
    the bucket, taken at that moment, so successive reservations form a fixed schedule that a
    late wake-up does not shift and a long pause does not turn into a burst beyond the
    capacity. `Pacer` uses it with a capacity of one request. A bucket is used one way only:
    a reservation may lie in the future, which spending now does not expect.

    A `rate` of 0 means no limit for spending; a bucket to reserve from needs a rate.
    """

    __slots__ = ("_clock", "_last", "capacity", "rate", "tokens")

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._clock = clock
        self._last = clock()

    def spend(self, amount: float) -> None:
        self._refill()
        self.tokens -= amount

    def wait_s(self) -> float:
        """0 when the bucket is not in debt; otherwise the seconds until it holds a quarter
        of its burst again, so a throttled reader wakes a few times a second, not after
        every slice (each wake-up is a pass of the event loop)."""
        if not self.rate:
            return 0.0
        self._refill()
        return (self.capacity / 4 - self.tokens) / self.rate if self.tokens < 0 else 0.0

    def strained(self) -> bool:
        """More than half the burst is spent: recent use is above the rate."""
        if not self.rate:
            return False
        self._refill()
        return self.tokens < self.capacity / 2

    def reserve(self, amount: float, earliest: float) -> float:
        """Take `amount` at the first moment from `earliest` (and from the last reservation)
        at which the bucket holds it; return that moment."""
        at = max(earliest, self._last)
        tokens = min(self.capacity, self.tokens + (at - self._last) * self.rate)
        if tokens < amount:
            at += (amount - tokens) / self.rate
            tokens = amount
        self.tokens, self._last = tokens - amount, at
        return at

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now


class Pace:
    """How fast one target's answers are read and parsed.

    `bytes_per_second` (0 = unlimited) with a burst of one whole answer (`burst_bytes`), so a
    single healthy answer is never slowed; `loop_share` (0 = unlimited) of the event loop's
    time for parsing, measured, with a burst of `LOOP_BURST_S`. `turn()` serialises the
    parsing of one target's answers, so a hundred concurrent streams of one target cannot
    parse a hundred slices in one pass of the event loop.
    """

    def __init__(
        self,
        bytes_per_second: float,
        burst_bytes: int,
        loop_share: float,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._bytes = TokenBucket(bytes_per_second, burst_bytes, clock)
        self._loop = TokenBucket(loop_share, LOOP_BURST_S, clock)
        self._lock = asyncio.Lock()
        self._on_wait = on_wait
        self.waited_s = 0.0  # total time readers waited for this pace

    def owes(self) -> bool:
        """True while the target uses more than either budget allows (over half of a burst
        spent): new shadows to it are shed, so the ones in flight are not slowed further.
        Debt alone would not do: readers keep a throttled bucket hovering around zero."""
        return self._bytes.strained() or self._loop.strained()

    async def read(self, size: int) -> None:
        """Account `size` bytes read; wait first if earlier reads overspent the byte rate."""
        await self._wait(self._bytes)
        self._bytes.spend(size)

    def read_now(self, size: int) -> bool:
        """`read` without an await, when the byte rate is not overspent (the common case);
        False (nothing counted): the caller awaits `read`."""
        if self._bytes.wait_s() > 0:
            return False
        self._bytes.spend(size)
        return True

    def turn_now(self) -> Turn | None:
        """`turn` without an await, when no reader holds or waits for the turn and the target
        owes no loop time (the common case); None: the caller awaits `turn`. Such a turn takes
        no lock: a turn is never held across an await (the parse it times runs without one),
        so the lock only queues the readers that wait for the debt to be repaid."""
        if self._lock.locked() or self._loop.wait_s() > 0:
            return None
        return Turn(self, locked=False)

    async def turn(self) -> Turn:
        """Wait for this target's turn to parse (one reader at a time), then for its loop-time
        debt to be repaid. The caller parses, tells the turn how many bytes (`add`), and
        `end`s it within `TURN_S`, then yields to the loop."""
        await self._lock.acquire()
        try:
            await self._wait(self._loop)
        except BaseException:
            self._lock.release()
            raise
        return Turn(self)

    async def _wait(self, bucket: TokenBucket) -> None:
        delay = bucket.wait_s()
        while delay > 0:
            self.waited_s += delay
            if self._on_wait is not None:
                self._on_wait(delay)
            await asyncio.sleep(delay)
            delay = bucket.wait_s()


class Turn:
    """One turn of parsing for one target: timed, charged to its pace, then the next reader's.

    Charged what it took, but never more than its bytes could cost (`WORST_NS_PER_BYTE`): a
    turn during which a busy machine descheduled the process is not charged the time it did
    not run. Usable as a context manager for a single piece of work.
    """

    __slots__ = ("_locked", "_pace", "_started", "size")

    def __init__(self, pace: Pace, *, locked: bool = True) -> None:
        self._pace = pace
        self._locked = locked  # holds the pace's lock (`Pace.turn`), or none (`turn_now`)
        self._started = time.perf_counter()
        self.size = 0

    def add(self, size: int) -> None:
        self.size += size

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def end(self) -> None:
        most = self.size * WORST_NS_PER_BYTE * 1e-9 + TURN_OVERHEAD_S
        self._pace._loop.spend(min(self.elapsed(), most))
        if self._locked:
            self._pace._lock.release()

    def __enter__(self) -> Turn:
        return self

    def __exit__(self, *_: object) -> None:
        self.end()


class Unpaced(Pace):
    """No pace at all: answers are read as they come and parsed in turns that only time
    themselves (the reader still yields to the loop after `TURN_S`). For callers off the
    primary's path, such as replay, which have no loop to share with production traffic.
    It holds no state, so one instance (`UNPACED`) serves every reader on every loop."""

    def __init__(self) -> None:  # no buckets and no lock: nothing to count, nothing to wait
        self.waited_s = 0.0

    def owes(self) -> bool:
        return False

    async def read(self, size: int) -> None:
        return None

    def read_now(self, size: int) -> bool:
        return True

    def turn_now(self) -> Turn:
        return _FreeTurn(self, locked=False)

    async def turn(self) -> Turn:
        return _FreeTurn(self, locked=False)


class _FreeTurn(Turn):
    __slots__ = ()

    def end(self) -> None:
        return None


UNPACED = Unpaced()
