"""The replay's side of the database: claims before sending, answers after, each in blocks.

The replay's process is DuckDB's one writer; a Python connection is not for concurrent use, so
each connection is used by one thread only. Two promises:

* **Nothing is sent twice.** Before a request goes out, its (request, candidate) claim is
  committed to `replay_claims`; a later run leaves claimed requests alone. A commit costs
  milliseconds (a file sync), so claims are committed a block at a time, ahead of the sends
  (`claims.ClaimLane` decides which and when): `claim(ids)` is one transaction.
* **Nothing answered is lost.** Answers (the candidate's `responses` row, and later its
  scores) are committed as they come, grouped: up to `COMMIT_ROWS` of them, gathered for at
  most `GATHER_S`, go in one commit, through the recorder's own row builder
  (`shadowtap.recorder.rows.to_columns`), so redaction and credential scrubbing are the
  storage's.

Claims and answers are two lanes, each a thread with its own connection: a claim never waits
behind a batch of answers being written.

Example:

    store = ReplayStore(
        connect(path), Privacy("redacted"), "small", run_id, tasks, max_text_bytes=131072
    )
    await store.claim([request_id, ...])   # durable before any of them is sent
    store.record(exchange)                 # in the next commit
    await store.release([request_id])      # never sent after all: a later run sends it
    await store.drain(); await store.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import duckdb
from shadowtap.exchange import Exchange
from shadowtap.log import get_logger
from shadowtap.recorder import frames
from shadowtap.recorder.caps import cap_batch
from shadowtap.recorder.parquet import REPLAYED_DDL, REPLAYED_TABLE, roll_replayed
from shadowtap.recorder.privacy import Privacy
from shadowtap.recorder.rows import Columns, rows, to_columns
from shadowtap.recorder.schema import COLUMNS
from shadowtap.recorder.store import safe_error
from shadowtap.tasks import TaskSet

log = get_logger("shadowtap.replay")
T = TypeVar("T")
# Answers (and scores) are committed once this many are queued, or once the first of them has
# waited GATHER_S: a kill loses at most that moment's answers, and never sends them again.
ROLL_COLUMNS = ["request_id", "target", "kind"]
COMMIT_ROWS = 200
GATHER_S = 0.1


class StoreError(Exception):
    """The database refused a write; the run cannot promise what it sent, so it stops."""


class ReplayStore:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        privacy: Privacy,
        target: str,
        run_id: str,
        tasks: TaskSet,
        parquet_dir: str | None = None,
        *,
        max_text_bytes: int,
    ) -> None:
        self.con = con
        self.target = target
        self.run_id = run_id
        # Where answers and scores roll to Parquet (`storage.parquet_dir`), as live ones do.
        self.parquet_dir = parquet_dir
        self._privacy = privacy
        # `storage.max_text_bytes`, as the live recorder applies it: a candidate's long answer
        # is cut and marked, never kept whole in blocks DuckDB cannot evict (recorder.caps).
        self._max_text_bytes = max_text_bytes
        self._tasks = tasks
        # Two lanes, each a thread with its own connection to the file: claims never queue
        # behind a batch of answers being written (DuckDB runs both transactions at once; they
        # touch different tables, so they never conflict).
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "shadowtap-replay-db")
        self._claim_con = con.cursor()
        self._claim_pool = concurrent.futures.ThreadPoolExecutor(1, "shadowtap-replay-claims")
        self._results: list[Exchange] = []
        self._result_flusher: asyncio.Task[None] | None = None
        self._commit_now = asyncio.Event()  # a full batch, or a drain: stop gathering
        self.recorded = 0  # answers committed
        self.lost = 0  # answers the database refused (counted, logged, the run goes on)
        self.scores_lost = 0  # sets of scores of stored answers it refused (a rerun scores them)
        self.commits = 0

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(con, *args)` on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, self.con, *args)

    async def _on_claims(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._claim_pool, fn, self._claim_con, *args)

    async def claim(self, request_ids: list[str]) -> None:
        """Commit the claims of `request_ids` in one transaction; return once they are durable.
        Raises StoreError when they cannot be written (none of them may then be sent)."""
        try:
            await self._on_claims(self._transaction, request_ids, [])
        except Exception as error:
            log.error("replay_claim_failed", claims=len(request_ids), error=safe_error(error))
            raise StoreError(f"cannot write to the database: {safe_error(error)}") from None
        self.commits += 1

    async def release(self, request_ids: list[str]) -> None:
        """Delete this run's claims of `request_ids`: never sent (handed back), or refused by
        the candidate unprocessed (429/503), so a later run sends them. One transaction."""

        def delete(con: duckdb.DuckDBPyConnection) -> None:
            con.register(
                "_replay_release", frames.frame("replay_claims", {"request_id": request_ids})
            )
            try:
                con.execute(
                    "DELETE FROM replay_claims WHERE target = ? AND replay_run = ?"
                    " AND request_id IN (SELECT request_id FROM _replay_release)",
                    [self.target, self.run_id],
                )
            finally:
                con.unregister("_replay_release")

        try:
            await self._on_claims(delete)
        except Exception as error:
            raise StoreError(f"cannot write to the database: {safe_error(error)}") from None
        self.commits += 1

    def record(self, exchange: Exchange) -> None:
        """Queue an answered exchange's candidate result, or (later) its scores, for the next
        commit: whichever rows it carries."""
        self._results.append(exchange)
        if len(self._results) >= COMMIT_ROWS:
            self._commit_now.set()
        if self._result_flusher is None or self._result_flusher.done():
            self._result_flusher = self._tasks.spawn(self._flush_results(), name="replay-answers")

    async def drain(self) -> None:
        """Wait until everything queued is committed (at once: no more gathering)."""
        while self._result_flusher is not None and not self._result_flusher.done():
            self._commit_now.set()
            await asyncio.shield(self._result_flusher)

    async def open(self) -> None:
        """Ready the Parquet roll, and roll what a run that was killed left unrolled."""
        if self.parquet_dir is not None:
            await self.call(lambda con: con.execute(REPLAYED_DDL))
            await self.roll()

    async def roll(self) -> None:
        """Roll this database's replayed answers to Parquet; a failure is logged, and what it
        left is rolled by the next run (the rows themselves are safe in the database)."""
        if self.parquet_dir is None:
            return
        try:
            rolled = await self.call(roll_replayed, self.parquet_dir)
        except Exception as error:
            log.error("replay_parquet_roll_failed", error=safe_error(error))
            return
        if rolled:
            log.info("replay_parquet_rolled", answers=rolled)

    async def close(self) -> None:
        await self.drain()
        await self.roll()
        await self._on_claims(lambda con: con.close())
        self._claim_pool.shutdown(wait=True)

        def finish(con: duckdb.DuckDBPyConnection) -> None:
            with contextlib.suppress(duckdb.Error):
                con.execute("CHECKPOINT")  # fold the WAL in: the next open replays nothing
            con.close()

        await self.call(finish)
        self._pool.shutdown(wait=True)

    async def _flush_results(self) -> None:
        while self._results:
            # A commit costs ~6 ms of CPU whatever its size (bench/replay.py: 0.30 ms an answer
            # in commits of 20, 0.08 in commits of 100): gather for a moment first.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GATHER_S):
                    await self._commit_now.wait()
            self._commit_now.clear()
            results, self._results = self._results, []
            try:
                lost = await self.call(self._commit, results)
            except Exception as error:
                lost = results
                log.error("replay_commit_failed", error=safe_error(error))
            self.commits += 1
            answers = sum(1 for exchange in results if exchange.results)
            lost_answers = sum(1 for exchange in lost if exchange.results)
            self.recorded += answers - lost_answers
            self.lost += lost_answers
            self.scores_lost += len(lost) - lost_answers

    # -- on the database thread ----------------------------------------------------------------
    def _commit(self, con: duckdb.DuckDBPyConnection, results: list[Exchange]) -> list[Exchange]:
        """One transaction with every answer and every set of scores; returns those lost."""
        try:
            self._transaction(con, [], results)
            return []
        except Exception as error:
            log.warning("replay_batch_failed", size=len(results), error=safe_error(error))
        # One bad answer must not cost the others: each alone.
        lost = []
        for exchange in results:
            try:
                self._transaction(con, [], [exchange])
            except Exception as error:
                lost.append(exchange)
                log.error("replay_record_failed", error=safe_error(error))
        return lost

    def _transaction(
        self, con: duckdb.DuckDBPyConnection, ids: list[str], results: list[Exchange]
    ) -> None:
        con.execute("BEGIN TRANSACTION")
        try:
            if ids:
                now = datetime.now(UTC)
                claims: Columns = {
                    "request_id": ids,
                    "target": [self.target] * len(ids),
                    "replay_run": [self.run_id] * len(ids),
                    "claimed_at": [now] * len(ids),
                }
                self._insert(con, "replay_claims", claims, list(COLUMNS["replay_claims"]))
            if results:
                tables = to_columns(results, self._privacy)
                cut = cap_batch(tables, self._max_text_bytes)
                if cut:
                    log.info("replay_texts_truncated", **cut)
                # The exchange and the primary's answer are stored already: only the
                # candidate's answer and its scores are new.
                for table in ("responses", "scores"):
                    self._insert(con, table, tables[table], list(COLUMNS[table]))
                if self.parquet_dir is not None:
                    self._insert(con, REPLAYED_TABLE, self._to_roll(results), ROLL_COLUMNS)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    def _to_roll(self, results: list[Exchange]) -> Columns:
        """The `_rollup_replayed` rows of these answers and sets of scores."""
        return {
            "request_id": [e.request_id for e in results],
            "target": [self.target] * len(results),
            "kind": ["answer" if exchange.results else "scores" for exchange in results],
        }

    @staticmethod
    def _insert(
        con: duckdb.DuckDBPyConnection, table: str, columns: Columns, names: list[str]
    ) -> None:
        if rows(columns):
            frames.insert(con, table, columns, names)
