"""The proxy's side of one scoring worker process: send it a batch of jobs, read the outcomes.

A batch is several exchanges' jobs in one frame (one write, one wake-up of the worker, one
read on each side for many pairs): `WorkerPool` gathers what is queued when a worker frees up.
Each task still has its own time limit, counted from the previous task's result. When a task
runs past it, or the worker dies under it, that task's outcome says so, the worker is killed,
and every task of the batch not run yet is handed back (`Worker.run` returns those jobs, each
resuming at its first task not run) to go on on another worker: one pathological pair costs
its own score, never its batch-mates'.

Frame of a batch, proxy → worker (inside the usual length-prefixed frame), per job:
`BATCH_ENTRY(first task to run, len(pickled job))` then the pickled job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from shadowtap.scorers.worker import BATCH_ENTRY, HEADER, MAX_RESULT_BYTES, Job

# (score, detail, error): exactly one of score-or-None-with-detail, or error, as a Score holds.
Outcome = tuple[float | None, dict[str, Any] | None, str | None]

EXIT_WAIT_S = 1.0  # after its socket closed, how long a worker may take to be reaped


class ProtocolError(Exception):
    """The worker sent something it never sends: it is treated as broken."""


@dataclass(eq=False, slots=True)
class Pending:
    """One exchange's job, from the moment it is queued until every task has an outcome."""

    job: Job
    payload: bytes  # the pickled job, pickled once however often it is sent
    limits: Sequence[float]
    done: asyncio.Future[None]
    start: int = 0  # the first task without an outcome
    outcomes: list[Outcome | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outcomes = [None] * len(self.limits)

    @property
    def finished(self) -> bool:
        return self.start >= len(self.limits)

    def settle(self, error: str) -> None:
        """Give every task not run `error` as its outcome, and wake whoever waits."""
        for index in range(self.start, len(self.limits)):
            self.outcomes[index] = (None, None, error)
        self.start = len(self.limits)
        self.resolve()

    def resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


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
        self.killed_task: tuple[Pending, int] | None = None  # what it was killed over

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

    async def run(self, batch: Sequence[Pending]) -> list[Pending]:
        """Run the batch's tasks in order, filling each job's outcomes and resolving each job
        as it completes. Returns the jobs with tasks left when this worker was killed (a task
        over its limit) or died: the task it was on has its outcome (why), the rest go on
        elsewhere. Cancelled mid-batch, the worker is killed (what it does is unknown)."""
        parts: list[bytes] = []
        for pending in batch:
            parts.append(BATCH_ENTRY.pack(pending.start, len(pending.payload)))
            parts.append(pending.payload)
        first = True
        try:
            self.send(*parts)
            for position, pending in enumerate(batch):
                while not pending.finished:
                    index = pending.start
                    pending.outcomes[index] = await self._next(pending.limits[index], first)
                    first = False
                    pending.start += 1
                    if self.dead:
                        self.killed_task = (pending, index)
                        if pending.finished:
                            pending.resolve()
                        return [p for p in batch[position:] if not p.finished]
                pending.resolve()
        except BaseException:
            self.kill()
            raise
        return []

    async def _next(self, limit: float, first: bool) -> Outcome:
        """The next task's outcome; on a timeout, a broken frame or a death, the worker is
        killed and the outcome says why."""
        try:
            async with asyncio.timeout(limit):
                if first:
                    await self.writer.drain()  # sending is part of the first task
                body = await self.read_frame()
            return decode(body)
        except TimeoutError:
            self.kill()
            return (None, None, f"TimeoutError: timed out after {limit:g} s")
        except ProtocolError as error:
            self.kill()
            return (None, None, f"ProtocolError: scoring worker sent {error}")
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self.exit_code()
            self.kill()
            return (None, None, f"WorkerDied: scoring worker process died (exit code {code})")
