"""The replay run: recorded requests to one candidate, paced, budgeted, scored and stored.

Each request goes: its claim committed (a block at a time, ahead of need: `claims`) → a
concurrency slot → its pacer slot → sent (through `send_to_candidate`) → on 429/503 retried
after the candidate's `Retry-After` → slot freed → its answer stored, marked
`source = 'replay'` and the run's id → scored against the recorded primary answer with the
configured scorers → its scores stored in a later commit (a kill loses at most scores, and the
next run scores what was stored unscored before sending anything: `rescore`). The run stops
starting requests when a budget is reached, the candidate keeps failing, or `stop()` is called
(the first Ctrl-C); requests in flight then finish and are stored. `cancel()` (a second
Ctrl-C) cuts them off.

Example:

    runner = ReplayRunner(config, options, db_path="shadowtap.duckdb")
    summary = await runner.run(console)
    summary.show(console)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from shadowtap.completion import Completion
from shadowtap.config import Config
from shadowtap.exchange import TargetResult
from shadowtap.ids import uuid7
from shadowtap.log import get_logger
from shadowtap.recorder import connect
from shadowtap.recorder.privacy import Privacy
from shadowtap.replay.call import ReplayClient, send_to_candidate
from shadowtap.replay.claims import ClaimLane
from shadowtap.replay.collector import quiet_collector
from shadowtap.replay.options import ReplayError, ReplayOptions, checked_target
from shadowtap.replay.pacing import (
    MAX_RETRY_AFTER_S,
    RETRY_STATUSES,
    Budget,
    FailureGuard,
    Pacer,
    backoff_s,
    retry_after_s,
)
from shadowtap.replay.progress import ReplayCounts, ReplayProgress, ReplaySummary
from shadowtap.replay.rescore import (
    answer_only,
    replayed_exchange,
    score_answer,
    score_unscored,
    start_scoring,
)
from shadowtap.replay.source import (
    Recorded,
    Relations,
    copy_recorded,
    load_page,
    make_plan,
)
from shadowtap.replay.store import ReplayStore, StoreError
from shadowtap.tasks import TaskSet

log = get_logger("shadowtap.replay")

__all__ = ["ReplayError", "ReplayOptions", "ReplayRunner"]  # the options live in options.py


class ReplayRunner:
    def __init__(
        self,
        config: Config,
        options: ReplayOptions,
        db_path: str | Path,
        parquet_dir: str | Path | None = None,
        config_path: str | Path | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.target = checked_target(config, options)
        self.credentials = self.target.secrets()  # scrubbed from whatever is stored
        try:
            self.pacer = Pacer(options.rps)
            self.budget = Budget(options.max_cost_usd, options.max_tokens)
            self.guard = FailureGuard(options.max_consecutive_errors)
        except ValueError as error:
            raise ReplayError(str(error)) from None
        self.db_path = Path(db_path)
        if parquet_dir is None and not self.db_path.exists():
            raise ReplayError(f"{db_path} does not exist (record with `shadowtap serve` first)")
        self.relations = (
            Relations.local(str(db_path))
            if parquet_dir is None
            else Relations.parquet(str(parquet_dir))
        )
        self.source_description = (
            f"DuckDB file {db_path}" if parquet_dir is None else f"Parquet under {parquet_dir}"
        )
        self.config_path = Path(config_path) if config_path is not None else None
        self.run_id = uuid7()
        self.counts = ReplayCounts()
        self.stop_reason: str | None = None  # nothing more is sent, launched or not
        self.exhausted: str | None = None  # a budget: nothing more is launched
        self.tasks = TaskSet()
        self._requests = TaskSet()
        self._in_flight = 0
        self._lane: ClaimLane | None = None
        self.scoring: Any = None  # the run's ScoringRunner, once started (None: no scorers)

    @property
    def backlog_limit(self) -> int:
        """Answers that may wait for scoring and storing at once (the sends stop beyond)."""
        return self.options.concurrency * 4 + 16

    def stop(self, reason: str) -> None:
        """Start nothing more; what is in flight finishes and is stored."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning("replay_stopping", reason=reason)

    async def cancel(self) -> None:
        """Cut off what is in flight too (their claims stay: they may have been sent)."""
        self.stop("cancelled")
        await self._requests.cancel_all()

    async def run(self, console: Console | None = None) -> ReplaySummary:
        console = console or Console(stderr=True)
        began = time.monotonic()
        try:
            con = await asyncio.to_thread(connect, self.db_path)
        except Exception as error:
            raise ReplayError(str(error)) from None
        storage = self.config.storage
        privacy = Privacy(storage.bodies)
        store = ReplayStore(
            con,
            privacy,
            self.target.name,
            self.run_id,
            self.tasks,
            storage.parquet_dir,
            max_text_bytes=storage.max_text_bytes,
        )
        try:
            try:
                await store.open()
                plan = await store.call(
                    make_plan, self.relations, self.target.name, self.options.selection
                )
                await store.call(copy_recorded, self.relations)
            except Exception as error:
                raise ReplayError(f"cannot read recorded requests: {error}") from None
            self.counts.planned = plan.to_send
            self.counts.skipped = plan.skipped
            with quiet_collector():  # ~an eighth of the run's CPU otherwise (see collector)
                await self._send_all(store, plan.bounds, plan.to_send, console)
        finally:
            await store.close()
        return ReplaySummary(
            run_id=self.run_id,
            candidate=self.target.name,
            source=self.source_description,
            db_path=self.db_path,
            config_path=self.config_path,
            counts=self.counts,
            stop_reason=self.stop_reason or self.exhausted,
            seconds=time.monotonic() - began,
            paced_rps=self.pacer.achieved_rps(),
            priced=self.target.prices.cost_usd(0, 0) is not None,
            recorded=store.recorded,
            lost=store.lost,
            scores_lost=store.scores_lost,
        )

    async def _send_all(
        self, store: ReplayStore, bounds: list[tuple[int, int]], total: int, console: Console
    ) -> None:
        client = ReplayClient.open(self.target, self.options.concurrency)
        scoring = None
        try:  # closed on every way out, a run cancelled or failing while it rescores included
            scoring = self.scoring = await start_scoring(
                self.config, self.target, self.backlog_limit
            )
            if scoring is not None:  # what an earlier run stored but did not score, first
                await self._rescore(store, scoring)
            await self._send_claimed(store, bounds, total, console, client, scoring)
        finally:
            await client.close()
            if scoring is not None:
                await scoring.close()
                await scoring.session.close()

    async def _send_claimed(
        self,
        store: ReplayStore,
        bounds: list[tuple[int, int]],
        total: int,
        console: Console,
        client: ReplayClient,
        scoring: Any,
    ) -> None:
        options = self.options
        slots = asyncio.Semaphore(options.concurrency)
        # Scoring and storing trail the sends; this bounds how many answers wait for them.
        backlog = asyncio.Semaphore(self.backlog_limit)
        progress = ReplayProgress(console, total, self.target.name, options.progress)
        pages = iter(bounds)
        unreadable = 0

        async def next_page() -> list[Recorded] | None:
            nonlocal unreadable
            bound = next(pages, None)
            if bound is None:
                return None
            page, bad = await store.call(load_page, self.relations, *bound)
            if bad:
                self.counts.skipped["not_json"] += bad
                unreadable += bad
            return page

        # Claimed ahead of the sends at most: two rounds of every slot, enough for a fast
        # candidate between two commits, and all a kill can leave claimed but never sent.
        lane = self._lane = ClaimLane(store, next_page, max(16, 2 * options.concurrency))
        launched = 0
        try:
            with progress:
                while True:
                    await slots.acquire()
                    await backlog.acquire()
                    recorded = None
                    exhausted = self.budget.stop_reason(self._in_flight)
                    if self.stop_reason is None and exhausted is None:
                        try:
                            recorded = await lane.next()
                        except StoreError as error:
                            self.stop(str(error))
                    if recorded is not None and self.stop_reason is not None:
                        lane.unsent(recorded)  # stopped while its claim was committed
                        recorded = None
                    if recorded is None:
                        slots.release()
                        backlog.release()
                        # Requests launched already were budgeted for: they still go.
                        self.exhausted = self.exhausted or exhausted
                        break
                    self._in_flight += 1
                    launched += 1
                    self._requests.spawn(
                        self._one(recorded, store, client, scoring, slots, backlog, progress),
                        name=f"replay:{recorded.request_id}",
                    )
                await self._requests.wait(None)
                await store.drain()
                progress.update(self.counts)
        finally:
            await self._requests.cancel_all()
            await lane.close()  # unsent claims handed back: the same command sends them
            self.counts.not_sent += total - launched - unreadable

    async def _rescore(self, store: ReplayStore, scoring: Any) -> None:
        """Score what an earlier run stored but did not score. A request task (`_requests`):
        `cancel()`, the second Ctrl-C, cuts it off as it cuts off sends; awaited directly, a
        page stuck in a slow scorer held the run until the scorer's time limit."""
        rescore = self._requests.spawn(
            score_unscored(
                store,
                scoring,
                self.target.name,
                self.credentials,
                self.counts,
                self.backlog_limit,
                lambda: self.stop_reason is not None,
            ),
            name="replay-rescore",
        )
        try:
            await asyncio.wait([rescore])
        finally:
            rescore.cancel()  # this run itself was cancelled: not left running
        if not rescore.cancelled():
            rescore.result()  # its error, if any, is the run's

    async def _one(
        self,
        recorded: Recorded,
        store: ReplayStore,
        client: ReplayClient,
        scoring: Any,
        slots: asyncio.Semaphore,
        backlog: asyncio.Semaphore,
        progress: ReplayProgress,
    ) -> None:
        completion = None
        try:
            completion = await self._send(recorded, store, client)
        except asyncio.CancelledError:
            self.counts.cancelled += 1
            raise
        except Exception as error:  # a bug here must stop the run loudly, not lose a task
            log.exception("replay_internal_error", request_id=recorded.request_id)
            self.stop(f"internal error: {type(error).__name__}")
        finally:
            self._in_flight -= 1
            slots.release()
        try:
            if completion is not None:
                await self._finish(recorded, completion, store, scoring)
        finally:
            backlog.release()
            progress.update(self.counts)

    async def _send(
        self, recorded: Recorded, store: ReplayStore, client: ReplayClient
    ) -> Completion | None:
        """Send (its claim is committed), retry on 429/503; the final answer, or None when
        none is to be stored."""
        sent = False
        for attempt in range(1, self.options.max_retries + 2):
            await self.pacer.wait()
            if self.stop_reason is not None:
                break
            sent = True
            self.counts.attempts += 1
            result = await send_to_candidate(client, self.target, recorded)
            completion = result.completion
            reason = self.guard.observe(completion.ok, completion.status)
            if reason is not None:
                self.stop(reason)
            if completion.status not in RETRY_STATUSES:
                return completion
            wait = backoff_s(retry_after_s(result.retry_after), attempt)
            if wait > MAX_RETRY_AFTER_S:
                self.stop(
                    f"the candidate asked to wait {wait:,.0f} s (Retry-After): more than "
                    f"{MAX_RETRY_AFTER_S:.0f} s; run the same command again later"
                )
            if attempt > self.options.max_retries or self.stop_reason is not None:
                break
            self.counts.retries += 1
            self.pacer.defer(time.monotonic() + wait)
        if not sent:  # stopped before its first attempt: the claim is handed back with the stock
            self.counts.not_sent += 1
            if self._lane is not None:
                self._lane.unsent(recorded)
            return None
        # Refused (429/503), never answered: the claim goes, so a later run sends it again.
        self.counts.rate_limited += 1
        await self._release(store, recorded)
        return None

    async def _release(self, store: ReplayStore, recorded: Recorded) -> None:
        try:
            await store.release([recorded.request_id])
        except StoreError as error:  # it stays claimed: the next run counts it interrupted
            self.stop(str(error))

    async def _finish(
        self, recorded: Recorded, completion: Completion, store: ReplayStore, scoring: Any
    ) -> None:
        target = self.target
        cost = target.prices.cost_usd(completion.prompt_tokens, completion.completion_tokens)
        self.budget.add(cost, completion.prompt_tokens, completion.completion_tokens)
        counts = self.counts
        counts.answered += 1
        counts.errors += not completion.ok
        counts.cost_usd, counts.tokens = self.budget.cost_usd, self.budget.tokens
        counts.without_usage = self.budget.without_usage
        source = "replay-redacted" if recorded.redacted else "replay"
        result = TargetResult(target.name, "candidate", completion, cost, source, self.run_id)
        # Stored before it is scored: a kill from here on loses at most the scores, which the
        # next run finds unscored and scores (`rescore`).
        store.record(answer_only(recorded, result, self.credentials))
        if scoring is not None:
            exchange = replayed_exchange(recorded, result, self.credentials)
            await score_answer(scoring, exchange, target.name, store, counts)
