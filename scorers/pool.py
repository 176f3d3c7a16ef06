"""`WorkerPool`: CPU scorers in worker processes that are killed at their time limit.

Threads cannot be stopped, and a thread in a long C call (a regex, an edit distance) holds the
GIL and stalls the event loop; `concurrent.futures.ProcessPoolExecutor` cannot kill one worker
without breaking the whole pool. So the pool is small and our own:

* `processes` workers, each a fresh interpreter (`shadowtap.scorers.worker`, started with
  asyncio's subprocess API: spawned, never forked, and awaited on the loop) holding a copy of
  the CPU scorers, talking over a socketpair read and written with asyncio streams — the event
  loop never blocks on a worker;
* a job is one exchange's CPU tasks; a free worker takes its share of the queued jobs as one
  batch (`worker_handle`: one frame, one wake-up for many pairs, and a short queue is sent at
  once, never held back to fill a batch). Each task has its own time limit. Past it, the worker
  is killed (SIGKILL), the task's outcome is "timed out after N s", and the batch's remaining
  tasks go on on another worker. A worker that dies (segfault, `os._exit`, OOM kill) is handled
  the same way: its task is an error, the others are run elsewhere, nothing hangs;
* workers start on demand: none until the first job, a second only when jobs queue while the
  first is busy (an idle sidecar pays no worker's memory);
* each worker slot has a supervisor that starts a replacement as soon as its worker exits,
  backing off (0.25 s doubling to 30 s) while workers keep dying young, so a crash loop cannot
  turn into a fork bomb;
* jobs wait for a free worker in a queue of at most `queue_max` (the rest of a killed batch
  goes back to its front, past the bound: it was admitted); beyond it `run` raises `QueueFull`
  at once (the runner records the pairs as skipped and counts them);
* if no worker can start at all, jobs fail fast with an error naming why, instead of waiting.

`close()` fails queued jobs, closes every worker's socket (an idle worker exits by itself),
waits `grace_s` and kills what still runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from shadowtap.log import get_logger
from shadowtap.scorers.base import CpuScorer
from shadowtap.scorers.worker import READY, Job
from shadowtap.scorers.worker_handle import Outcome, Pending, ProtocolError, Worker
from shadowtap.tasks import TaskSet

if TYPE_CHECKING:
    from shadowtap.config import ServerConfig

log = get_logger("shadowtap.scorers")

# One to score, one to stand in while another is replaced; each is 28-34 MB of memory
# (`bench/scoring.py --hop`, docs/scorers.md). More than the sidecar's cores gains nothing.
DEFAULT_PROCESSES = 2
BOOT = "from shadowtap.scorers.worker import main; main()"
BOOT_TIMEOUT_S = 60.0  # a cold start imports pydantic and the scorers' modules
STABLE_S = 10.0  # a worker that lived this long died of its job, not of a crash loop
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.25, 30.0
# One batch: enough jobs to pay a round trip once for many pairs, few enough that a batch
# handed on after a kill is quickly redone; the bytes bound caps what one frame holds.
MAX_BATCH_JOBS = 32
MAX_BATCH_BYTES = 4 * 1024 * 1024


class QueueFull(Exception):
    """Every worker is busy and `queue_max` jobs already wait: this job is shed."""


class PoolUnavailable(Exception):
    """The pool is closed, or no worker can start; the message says which."""


@dataclass(frozen=True, slots=True)
class CpuSettings:
    """How CPU scorers run (`[server]` keys `scoring_*`, see the README)."""

    processes: int = DEFAULT_PROCESSES
    timeout_s: float = 2.0  # per task, unless the scorer's own `timeout_s` says otherwise
    queue_max: int = 100
    max_pair_chars: int = 1_000_000

    @classmethod
    def of(cls, server: ServerConfig) -> CpuSettings:
        return cls(
            processes=server.scoring_processes or DEFAULT_PROCESSES,
            timeout_s=server.scoring_timeout_s,
            queue_max=server.scoring_queue_max,
            max_pair_chars=server.scoring_max_pair_chars,
        )


class WorkerPool:
    def __init__(self, scorers: Sequence[CpuScorer[Any]], processes: int, queue_max: int) -> None:
        self.scorers = list(scorers)
        self.processes = processes
        self.queue_max = queue_max
        self._blob = pickle.dumps(self.scorers, protocol=pickle.HIGHEST_PROTOCOL)
        self._pending: collections.deque[Pending] = collections.deque()  # not yet on a worker
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()  # free slots
        self._alive: set[Worker] = set()
        self._supervisors = TaskSet()
        self._slots = 0  # worker slots started (each one supervisor)
        self._booting = 0  # slots whose worker is starting
        self._start_error: str | None = None
        self._booted = asyncio.Event()  # set after each boot, ready or failed
        self._closed = False
        self.batches_sent = 0  # frames of jobs sent to workers (bench/scoring.py reads them)
        self.jobs_sent = 0  # jobs in those frames (one handed on after a kill counts again)

    @staticmethod
    def check_picklable(scorers: Sequence[CpuScorer[Any]]) -> tuple[str, str] | None:
        """(name, why) of the first scorer a worker could not receive; None if all can."""
        for scorer in scorers:
            try:
                pickle.loads(pickle.dumps(scorer, protocol=pickle.HIGHEST_PROTOCOL))
            except Exception as error:
                return scorer.name, f"{type(error).__name__}: {error}"
        return None

    @property
    def alive(self) -> int:
        return len(self._alive)

    def start(self) -> None:
        """Start every worker slot now (idempotent). Without it, slots start on demand."""
        while self._slots < self.processes and not self._closed:
            self._add_slot()

    async def wait_ready(self, within_s: float = BOOT_TIMEOUT_S) -> bool:
        """Start the workers and wait until one is ready: True, or False when none could start
        (or none did `within_s`). For batch runs that would rather not pay the start-up on
        their first pairs; the proxy does not wait (its workers start on its first job)."""
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while not self._alive and self._start_error is None and not self._closed:
                    self._booted.clear()
                    await self._booted.wait()
        return bool(self._alive)

    async def run(self, job: Job, limits: Sequence[float]) -> list[Outcome]:
        """Every task's outcome, in order. Raises `QueueFull` (nothing ran); never anything
        else short of cancellation: a pool that cannot run a task says so in its outcome."""
        loop = asyncio.get_running_loop()
        payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        pending = Pending(job, payload, limits, loop.create_future())
        if self._closed:
            pending.settle("PoolUnavailable: scoring is shutting down")
        elif self._start_error is not None and not self._alive:
            pending.settle(f"PoolUnavailable: {self._start_error}")
        elif len(self._pending) >= self.queue_max:
            raise QueueFull(f"{self.queue_max} jobs already wait for a scoring worker")
        else:
            self._pending.append(pending)
            self._wake()
        try:
            await pending.done
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._pending.remove(pending)  # on a worker already: its outcomes go unread
            raise
        lost = (None, None, "PoolUnavailable: not run")  # unreachable unless the pool is wrong
        return [lost if outcome is None else outcome for outcome in pending.outcomes]

    def _wake(self) -> None:
        """A job is queued: hand it to an idle worker, or start one more slot when none is
        idle and the ones starting will not be enough (workers cost nothing until needed)."""
        while self._idle:
            idle = self._idle.popleft()
            if not idle.done():
                idle.set_result(None)
                return
        if self._slots < self.processes and len(self._pending) > self._booting:
            self._add_slot()

    def _add_slot(self) -> None:
        slot = self._slots
        self._slots += 1
        self._supervisors.spawn(self._supervise(), name=f"shadowtap-scorer-worker-{slot}")

    def _take(self) -> list[Pending]:
        """The next batch for a free worker: its fair share of what is queued (so the other
        workers get theirs), at most `MAX_BATCH_JOBS` jobs and about `MAX_BATCH_BYTES`.
        A short queue gives a batch of one at once: batching never waits for company."""
        share = -(-len(self._pending) // max(1, len(self._alive)))
        batch: list[Pending] = []
        size = 0
        while self._pending and len(batch) < min(share, MAX_BATCH_JOBS):
            pending = self._pending[0]
            if batch and size + len(pending.payload) > MAX_BATCH_BYTES:
                break
            self._pending.popleft()
            if pending.done.done():  # its caller was cancelled
                continue
            batch.append(pending)
            size += len(pending.payload)
        return batch

    def _fail_pending(self, reason: str) -> None:
        while self._pending:
            self._pending.popleft().settle(f"PoolUnavailable: {reason}")

    async def _supervise(self) -> None:
        """One worker slot: keep a worker running in it until the pool closes."""
        loop = asyncio.get_running_loop()
        delay = 0.0
        while not self._closed:
            self._booting += 1
            try:
                worker = await self._boot()
            finally:
                self._booting -= 1
            if worker is None:
                delay = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, delay * 2))
                await asyncio.sleep(delay)
                continue
            self._start_error = None
            self._alive.add(worker)
            self._booted.set()
            try:
                await self._feed(worker)
            finally:
                self._alive.discard(worker)
                worker.kill()
            await worker.process.wait()
            lived = loop.time() - worker.started_at
            delay = 0.0 if lived >= STABLE_S else min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, delay * 2))
            if delay:
                await asyncio.sleep(delay)

    async def _feed(self, worker: Worker) -> None:
        """Give `worker` batches until it dies, is killed or the pool closes."""
        loop = asyncio.get_running_loop()
        exited = asyncio.ensure_future(worker.process.wait())
        batch: list[Pending] = []
        try:
            while not self._closed and not worker.dead:
                batch = self._take()
                if not batch:
                    idle: asyncio.Future[None] = loop.create_future()
                    self._idle.append(idle)
                    await asyncio.wait((idle, exited), return_when=asyncio.FIRST_COMPLETED)
                    if exited.done():
                        # Died idle: `_wake` must skip this slot, and a job it was handed
                        # meanwhile is still queued for the others.
                        idle.cancel()
                        if self._pending:
                            self._wake()
                        break
                    continue
                self.batches_sent += 1
                self.jobs_sent += len(batch)
                rest = await worker.run(batch)
                if worker.killed_task is not None:
                    pending, index = worker.killed_task
                    failed = pending.outcomes[index]
                    log.warning(
                        "scoring_worker_killed",
                        scorer=self.scorers[pending.job.tasks[index].scorer].name,
                        why=(failed[2] or "").partition(":")[0] if failed else "",
                        handed_on=len(rest),
                    )
                if rest:  # they were admitted: back to the front, past the queue's bound
                    self._pending.extendleft(reversed(rest))
                    self._wake()
                batch = []
        finally:
            exited.cancel()
            for pending in batch:  # cancelled (closing) mid-batch: nobody may wait forever
                if not pending.finished:
                    pending.settle("PoolUnavailable: scoring is shutting down")

    async def _boot(self) -> Worker | None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                BOOT,
                str(theirs.fileno()),
                str(os.getpid()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as error:
            ours.close()
            self._boot_failed(f"cannot start a worker process: {error}")
            return None
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker holds its end; ours must see EOF when it dies
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            process.kill()
            raise
        worker = Worker(process, reader, writer, loop.time())
        try:
            async with asyncio.timeout(BOOT_TIMEOUT_S):
                worker.send(orjson.dumps(sys.path))
                worker.send(self._blob)
                await writer.drain()
                ready = await worker.read_frame()
            if ready != READY:
                raise ProtocolError("no ready signal")
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ProtocolError) as error:
            worker.kill()
            code = await worker.exit_code()
            self._boot_failed(
                f"a scoring worker did not start ({type(error).__name__}, exit code {code}; "
                "its stderr says why)"
            )
            return None
        except BaseException:
            worker.kill()
            raise
        return worker

    def _boot_failed(self, reason: str) -> None:
        log.error("scoring_worker_start_failed", reason=reason)
        self._start_error = reason
        self._booted.set()
        if not self._alive:
            self._fail_pending(reason)

    async def close(self, grace_s: float = 1.0) -> None:
        """Fail queued jobs, let the workers exit, kill those still running after `grace_s`."""
        self._closed = True
        self._fail_pending("scoring is shutting down")
        for idle in self._idle:
            if not idle.done():
                idle.set_result(None)
        workers = list(self._alive)
        for worker in workers:
            worker.writer.close()  # an idle worker reads EOF and exits by itself
        if workers:
            exits = [asyncio.ensure_future(worker.process.wait()) for worker in workers]
            await asyncio.wait(exits, timeout=grace_s)
        for worker in workers:
            worker.kill()
        await self._supervisors.cancel_all()
        for worker in workers:
            await worker.process.wait()
        self._fail_pending("scoring is shutting down")  # handed back by a killed batch
