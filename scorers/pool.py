"""`WorkerPool`: CPU scorers in worker processes that are killed at their time limit.

Threads cannot be stopped, and a thread in a long C call (a regex, an edit distance) holds the
GIL and stalls the event loop; `concurrent.futures.ProcessPoolExecutor` cannot kill one worker
without breaking the whole pool. So the pool is small and our own:

* `processes` workers, each a fresh interpreter (`shadowtap.scorers.worker`, started with
  asyncio's subprocess API: spawned, never forked, and awaited on the loop) holding a copy of
  the CPU scorers, talking over a socketpair read and written with asyncio streams — the event
  loop never blocks on a worker;
* a job is one exchange's CPU tasks, run in order on one worker; each task has its own time
  limit. Past it, the worker is killed (SIGKILL), the task's outcome is "timed out after N s",
  and the job's remaining tasks go on on another worker. A worker that dies (segfault,
  `os._exit`, OOM kill) is handled the same way: its task is an error, nothing hangs;
* each worker slot has a supervisor that starts a replacement as soon as its worker exits,
  backing off (0.25 s doubling to 30 s) while workers keep dying young, so a crash loop cannot
  turn into a fork bomb;
* jobs wait for a free worker in a queue of at most `queue_max`; beyond it `run` raises
  `QueueFull` at once (the runner records the pairs as skipped and counts them);
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
from shadowtap.scorers.worker import HEADER, MAX_RESULT_BYTES, READY, Job
from shadowtap.tasks import TaskSet

if TYPE_CHECKING:
    from shadowtap.config import ServerConfig

log = get_logger("shadowtap.scorers")

# (score, detail, error): exactly one of score-or-None-with-detail, or error, as a Score holds.
Outcome = tuple[float | None, dict[str, Any] | None, str | None]

# One to score, one to stand in while another is replaced; each is 30-39 MB of memory
# (`bench/scoring.py --hop`, docs/scorers.md). More than the sidecar's cores gains nothing.
DEFAULT_PROCESSES = 2
BOOT = "from shadowtap.scorers.worker import main; main()"
BOOT_TIMEOUT_S = 60.0  # a cold start imports pydantic and the scorers' modules
STABLE_S = 10.0  # a worker that lived this long died of its job, not of a crash loop
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.25, 30.0
EXIT_WAIT_S = 1.0  # after its socket closed, how long a worker may take to be reaped


class QueueFull(Exception):
    """Every worker is busy and `queue_max` jobs already wait: this job is shed."""


class PoolUnavailable(Exception):
    """The pool is closed, or no worker can start; the message says which."""


class ProtocolError(Exception):
    """The worker sent something it never sends: it is treated as broken."""


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


class Worker:
    """The proxy's handle on one worker process (one process lifetime)."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        started_at: float,
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        self.started_at = started_at
        self.dead = False

    async def read_frame(self) -> bytes:
        (length,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
        if length > MAX_RESULT_BYTES + HEADER.size:
            raise ProtocolError(f"a frame of {length} bytes")
        return await self.reader.readexactly(length)

    def send(self, *parts: bytes) -> None:
        # One write (one syscall, one wake-up of the worker) per frame.
        self.writer.write(b"".join((HEADER.pack(sum(len(p) for p in parts)), *parts)))

    def kill(self) -> None:
        self.dead = True
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.writer.close()

    async def exit_code(self) -> int | None:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.process.wait(), EXIT_WAIT_S)
        return None

    async def run(
        self, payload: bytes, start: int, limits: Sequence[float], outcomes: list[Outcome | None]
    ) -> int:
        """Run the job's tasks from `start`, filling `outcomes`; return the first task not
        run. On a timeout or a death the worker is killed and the failed task's outcome says
        why; the caller goes on with the rest on another worker."""
        index = start
        try:
            self.send(HEADER.pack(start), payload)
            while index < len(limits):
                limit = limits[index]
                try:
                    async with asyncio.timeout(limit):
                        if index == start:
                            await self.writer.drain()  # sending is part of the first task
                        body = await self.read_frame()
                    outcomes[index] = decode(body)
                except TimeoutError:
                    outcomes[index] = (None, None, f"TimeoutError: timed out after {limit:g} s")
                    self.kill()
                    return index + 1
                except ProtocolError as error:
                    self.kill()
                    outcomes[index] = (None, None, f"ProtocolError: scoring worker sent {error}")
                    return index + 1
                except (asyncio.IncompleteReadError, ConnectionError):
                    code = await self.exit_code()
                    self.kill()
                    died = f"WorkerDied: scoring worker process died (exit code {code})"
                    outcomes[index] = (None, None, died)
                    return index + 1
                index += 1
        except BaseException:  # cancelled mid-job: what the worker is doing is unknown
            self.kill()
            raise
        return index


def decode(body: bytes) -> Outcome:
    try:
        score, detail, error = orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        raise ProtocolError("a malformed result") from None
    if not (
        (score is None or isinstance(score, float | int))
        and (detail is None or isinstance(detail, dict))
        and (error is None or isinstance(error, str))
    ):
        raise ProtocolError("a malformed result")
    return (None if score is None else float(score)), detail, error


class WorkerPool:
    def __init__(self, scorers: Sequence[CpuScorer[Any]], processes: int, queue_max: int) -> None:
        self.scorers = list(scorers)
        self.processes = processes
        self.queue_max = queue_max
        self._blob = pickle.dumps(self.scorers, protocol=pickle.HIGHEST_PROTOCOL)
        self._idle: collections.deque[Worker] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Worker]] = collections.deque()
        self._alive: set[Worker] = set()
        self._supervisors = TaskSet()
        self._start_error: str | None = None
        self._booted: asyncio.Event | None = None  # set after each boot, ready or failed
        self._started = False
        self._closed = False

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
        """Start the workers in the background (idempotent; `run` calls it too)."""
        if self._started or self._closed:
            return
        self._started = True
        self._booted = asyncio.Event()
        for slot in range(self.processes):
            self._supervisors.spawn(self._supervise(), name=f"shadowtap-scorer-worker-{slot}")

    async def wait_ready(self, within_s: float = BOOT_TIMEOUT_S) -> bool:
        """Start the workers and wait until one is ready: True, or False when none could start
        (or none did `within_s`). For batch runs that would rather not pay the start-up on
        their first pairs; the proxy does not wait."""
        self.start()
        assert self._booted is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while not self._alive and self._start_error is None and not self._closed:
                    self._booted.clear()
                    await self._booted.wait()
        return bool(self._alive)

    async def run(self, job: Job, limits: Sequence[float]) -> list[Outcome]:
        """Every task's outcome, in order. Raises `QueueFull` (nothing ran); never anything
        else short of cancellation: a pool that cannot run a task says so in its outcome."""
        self.start()
        payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        outcomes: list[Outcome | None] = [None] * len(job.tasks)
        index, admitted = 0, False
        while index < len(outcomes):
            try:
                worker = await self._acquire(admitted)
            except PoolUnavailable as unavailable:
                for rest in range(index, len(outcomes)):
                    outcomes[rest] = (None, None, f"PoolUnavailable: {unavailable}")
                break
            admitted = True
            try:
                before = index
                index = await worker.run(payload, index, limits, outcomes)
            finally:
                self._release(worker)
            if worker.dead and index > before:
                failed = outcomes[index - 1]
                log.warning(
                    "scoring_worker_killed",
                    scorer=self.scorers[job.tasks[index - 1].scorer].name,
                    why=(failed[2] or "").partition(":")[0] if failed else "",
                )
        lost = (
            None,
            None,
            "PoolUnavailable: not run",
        )  # unreachable unless the loop above is wrong
        return [lost if outcome is None else outcome for outcome in outcomes]

    async def _acquire(self, admitted: bool) -> Worker:
        while True:
            if self._closed:
                raise PoolUnavailable("scoring is shutting down")
            while self._idle:
                worker = self._idle.popleft()
                if not worker.dead:
                    return worker
            if self._start_error is not None and not self._alive:
                raise PoolUnavailable(self._start_error)
            if not admitted and len(self._waiters) >= self.queue_max:
                raise QueueFull(f"{self.queue_max} jobs already wait for a scoring worker")
            waiter: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                worker = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._release(waiter.result())  # handed a worker, then cancelled
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if not worker.dead:
                return worker

    def _release(self, worker: Worker) -> None:
        if worker.dead or self._closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _fail_waiters(self, reason: str) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolUnavailable(reason))

    async def _supervise(self) -> None:
        """One worker slot: keep a worker running in it until the pool closes."""
        loop = asyncio.get_running_loop()
        delay = 0.0
        while not self._closed:
            worker = await self._boot()
            if worker is None:
                delay = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, delay * 2))
                await asyncio.sleep(delay)
                continue
            self._start_error = None
            self._alive.add(worker)
            self._release(worker)
            if self._booted is not None:
                self._booted.set()
            try:
                await worker.process.wait()
            finally:
                self._alive.discard(worker)
                worker.kill()
            lived = loop.time() - worker.started_at
            delay = 0.0 if lived >= STABLE_S else min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, delay * 2))
            if delay:
                await asyncio.sleep(delay)

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
        if self._booted is not None:
            self._booted.set()
        if not self._alive:
            self._fail_waiters(reason)

    async def close(self, grace_s: float = 1.0) -> None:
        """Fail queued jobs, let the workers exit, kill those still running after `grace_s`."""
        self._closed = True
        self._fail_waiters("scoring is shutting down")
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
        self._idle.clear()
