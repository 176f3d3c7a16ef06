"""Claims taken in blocks ahead of the sends: a request's claim is durable before it goes out,
with no commit in each request's path.

A commit costs a file sync (10-35 ms on the benchmark machine). Waiting for one before every
send, even shared by the requests waiting at that moment, made the commit and not the
candidate bound a replay (325 req/s against a fake that answered 934 req/s alone). So the lane
claims ahead: it keeps a stock of planned requests whose claims are committed, and a request
takes one as soon as it has its concurrency slot. One commit claims a whole block.

How much stock: the lane starts with none and doubles its aim each time a request finds the
stock empty (as TCP's slow start does), up to `max_stock`, and refills once half of it is
drawn. A fast candidate soon finds a block committed before the last one runs out; a slow one
keeps next to none: a request then waits for its own claim's commit, small beside the
candidate's answer.

What a kill can leave behind: a claim promises the request *may* have been sent, so the next
run leaves it alone (it counts it `interrupted`; `--retry-interrupted` sends it again). Claims
in stock were never sent, so the stock is kept small and handed back (its claims deleted in
one commit) whenever it is not drawn from for `IDLE_S` — a run whose slots are all held by a
slow answer holds claims for exactly what is in flight — and when the run ends, finished or
stopped. Only a kill while the stock is flowing leaves up to the stock claimed but unsent.

Example:

    lane = ClaimLane(store, next_page, max_stock=128)
    recorded = await lane.next()     # claimed durably; None when the plan is done
    lane.unsent(recorded)            # it was not sent after all: handed back with the stock
    not_sent = await lane.close()    # every unsent claim deleted
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from shadowtap.log import get_logger
from shadowtap.replay.source import Recorded
from shadowtap.replay.store import ReplayStore, StoreError

log = get_logger("shadowtap.replay")

# Stock not drawn from for this long is handed back: the run has gone quiet (every slot held).
IDLE_S = 0.2

NextPage = Callable[[], Awaitable[list[Recorded] | None]]


class ClaimLane:
    """Planned requests, in plan order, each returned only once its claim is committed."""

    def __init__(self, store: ReplayStore, next_page: NextPage, max_stock: int) -> None:
        if max_stock < 1:
            raise ValueError(f"max_stock must be 1 or more (got {max_stock})")
        self.store = store
        self.max_stock = max_stock
        self._next_page = next_page
        self._pending: collections.deque[Recorded] = collections.deque()  # not claimed yet
        self._stock: collections.deque[Recorded] = collections.deque()  # claimed, not launched
        self._waiters: collections.deque[asyncio.Future[Recorded | None]] = collections.deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._pages_done = False  # every planned request has been read from the pages
        self._claiming = 0  # requests of the block being committed
        self._returning = 0  # requests of the stock being handed back (pending again after)
        self._closed = False
        self._error: StoreError | None = None
        self._launched = 0  # requests handed out
        self._target = 0  # the stock the lane aims at
        self._quiet = False  # the stock was handed back for want of draws: refill on the next

    async def next(self) -> Recorded | None:
        """The next planned request, its claim durable; None when none is left (or the lane
        is closed). Raises StoreError when claims cannot be written: nothing may be sent."""
        if self._error is not None:
            raise self._error
        self._quiet = False
        if self._stock:
            self._launched += 1
            self._wake.set()
            return self._stock.popleft()
        if self._closed or self._done:
            return None
        self._target = min(self.max_stock, max(1, 2 * self._target))  # it ran out: aim higher
        waiter: asyncio.Future[Recorded | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._start()
        self._wake.set()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is not None:
                    self.unsent(handed)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def unsent(self, recorded: Recorded) -> None:
        """A request `next` returned that was not sent after all (the run stopped first): its
        claim goes back with the stock."""
        self._launched -= 1
        self._stock.appendleft(recorded)

    async def close(self) -> int:
        """Claim nothing more, hand the stock back; returns how many requests were claimed
        and handed back at close (never sent)."""
        self._closed = True
        self._wake.set()
        if self._worker is not None:  # a commit under way finishes: its claims count
            await asyncio.wait([self._worker])
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        return await self._hand_back()

    # -- the lane's one task: every claim and hand-back, one commit at a time ----------------
    def _start(self) -> None:
        if self._worker is None and not self._closed:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name="replay-claims"
            )

    @property
    def _done(self) -> bool:
        """Nothing left to hand out, now or later (the stock aside)."""
        return self._pages_done and not self._pending and not self._claiming and not self._returning

    def _wanted(self) -> int:
        if self._done:
            return 0
        waiting = sum(1 for waiter in self._waiters if not waiter.done())
        target = 0 if self._quiet else self._target
        if not waiting and len(self._stock) > target // 2:
            return 0  # refilled in blocks of at least half the aim: fewer, larger commits
        return min(self.max_stock, waiting + target) - len(self._stock)

    async def _work(self) -> None:
        while not self._closed and self._error is None:
            wanted = self._wanted()
            if wanted > 0:
                try:
                    await self._claim(wanted)
                except Exception as error:  # reading the plan failed: nothing more can go
                    log.exception("replay_plan_unreadable")
                    self._fail(StoreError(f"cannot read the planned requests: {error}"))
                continue
            self._wake.clear()
            drawn_before = self._launched
            if not self._stock:
                await self._wake.wait()
                continue
            try:
                async with asyncio.timeout(IDLE_S):
                    await self._wake.wait()
            except TimeoutError:
                if self._launched == drawn_before and not self._closed:
                    # Quiet: keep claims only for what is in flight until the next draw.
                    self._target //= 2
                    self._quiet = True
                    await self._hand_back()

    async def _claim(self, wanted: int) -> None:
        block = await self._take(wanted)
        if not block:
            self._serve()
            return
        ids = [recorded.request_id for recorded in block]
        self._claiming = len(block)
        try:
            await self.store.claim(ids)
        except StoreError as error:  # not durable: none of them may go out, and nothing after
            self._claiming = 0
            self._pending.extendleft(reversed(block))
            self._fail(error)
            return
        self._claiming = 0
        self._stock.extend(block)
        self._serve()

    def _fail(self, error: StoreError) -> None:
        self._error = error
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)

    def _serve(self) -> None:
        """Hand stock (or None, when the plan is done) to the requests waiting for it."""
        for waiter in list(self._waiters):
            if waiter.done():
                continue
            if self._stock:
                self._launched += 1
                waiter.set_result(self._stock.popleft())
            elif self._done:
                waiter.set_result(None)

    async def _take(self, wanted: int) -> list[Recorded]:
        while len(self._pending) < wanted and not self._pages_done:
            page = await self._next_page()
            if page is None:
                self._pages_done = True
            else:
                self._pending.extend(page)
        return [self._pending.popleft() for _ in range(min(wanted, len(self._pending)))]

    async def _hand_back(self) -> int:
        if not self._stock:
            return 0
        stock, self._stock = list(self._stock), collections.deque()
        self._returning = len(stock)
        try:
            await self.store.release([recorded.request_id for recorded in stock])
        except StoreError as error:  # they stay claimed: the next run counts them interrupted
            log.error("replay_hand_back_failed", claims=len(stock), error=str(error))
            self._fail(self._error or error)
            return len(stock)
        finally:
            self._returning = 0
        if not self._closed:
            self._pending.extendleft(reversed(stock))  # claimed again when needed
        return len(stock)
