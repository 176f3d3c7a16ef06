"""One scoring worker process, started as `python -c "…worker import main; main()" FD PARENT_PID`.

Started by `shadowtap.scorers.pool.WorkerPool`, it talks to the proxy over the socket `FD`
(one end of a socketpair) in frames of a 4-byte big-endian length and a body:

1. proxy → worker: the proxy's `sys.path` (JSON), then the CPU scorers (pickled), once;
2. worker → proxy: `READY`;
3. proxy → worker, per batch: for each job, a 4-byte index of the first task to run, the
   4-byte length of the pickled `Job`, then the pickled `Job`;
4. worker → proxy, per task in order (the batch's jobs one after the other):
   `[score, detail, error]` (JSON) as soon as it is done.

The proxy alone decides when a task has run too long and kills this process; so the worker
only computes. It imports nothing of the proxy (no aiohttp, no DuckDB), dies with the proxy
(PR_SET_PDEATHSIG on Linux: a worker spinning in a loop must not outlive a killed parent), is
the OOM killer's first choice (oom_score_adj 500: a worker is replaced, the proxy is not), runs
at a lower CPU priority than the proxy (nice +10: production traffic first), and ignores
SIGINT (a Ctrl-C reaches the whole process group; the proxy decides).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from shadowtap.completion import Completion
from shadowtap.scorers.base import CpuScorer, Pair, ScorerSkipped, check_result

HEADER = struct.Struct("!I")
BATCH_ENTRY = struct.Struct("!II")  # a batched job's first task to run, its pickle's length
READY = b"ready"
MAX_RESULT_BYTES = 64 * 1024  # one task's [score, detail, error]; detail lands in DuckDB
MAX_ERROR_CHARS = 500
NICENESS = 10  # added to the proxy's: the kernel favours the proxy ~10:1 when both want CPU


@dataclass(frozen=True, slots=True)
class Task:
    scorer: int  # index into the scorers the pool was built with
    primary: int  # index into Job.completions
    target: int
    target_name: str
    role: str


@dataclass(frozen=True, slots=True)
class Job:
    """One exchange's CPU work. The request travels as its body (bytes pickle as a copy, and
    the worker parses it), and only when a task's scorer reads it."""

    request_body: bytes | None
    completions: tuple[Completion, ...]
    tasks: tuple[Task, ...]


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


def run_task(scorers: list[CpuScorer[Any]], job: Job, task: Task, request: Any) -> bytes:
    """One task's result frame body; a scorer's exception is a result, never raised."""
    scorer = scorers[task.scorer]
    pair = Pair(
        request if scorer.reads_request else None,
        job.completions[task.primary],
        job.completions[task.target],
        task.target_name,
        task.role,  # type: ignore[arg-type]
    )
    result: list[Any]
    try:
        score, detail = check_result(scorer.score(pair))
        result = [score, detail, None]
    except ScorerSkipped as skipped:
        result = [None, {"skipped": str(skipped)[:MAX_ERROR_CHARS]}, None]
    except Exception as error:
        result = [None, None, error_text(error)]
    try:
        body = orjson.dumps(result)
    except TypeError as error:  # a detail that is not JSON (a set, an object)
        return orjson.dumps([None, None, error_text(TypeError(f"detail is not JSON: {error}"))])
    if len(body) > MAX_RESULT_BYTES:
        too_big = ValueError(f"result over {MAX_RESULT_BYTES} bytes of JSON")
        return orjson.dumps([None, None, error_text(too_big)])
    return body


def parse_request(body: bytes | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:  # also what orjson raises past its nesting limit
        return None
    return parsed if isinstance(parsed, dict) else None


class Channel:
    """Blocking frames over the socket: the worker has nothing else to do while it waits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def recv(self) -> bytes | None:
        header = self.reader.read(HEADER.size)
        if len(header) < HEADER.size:
            return None  # the proxy closed its end: time to go
        (length,) = HEADER.unpack(header)
        body = self.reader.read(length)
        return body if len(body) == length else None

    def send(self, body: bytes) -> None:
        self.sock.sendall(HEADER.pack(len(body)) + body)


def die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
        # Out of memory, the kernel should take a worker (replaced at once), not the proxy.
        with contextlib.suppress(OSError):
            Path("/proc/self/oom_score_adj").write_text("500")
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(0)


def serve(channel: Channel) -> None:
    path = channel.recv()
    scorers_blob = channel.recv()
    if path is None or scorers_blob is None:
        return
    # The proxy's import path first: scorer plug-ins are found where the proxy found them.
    sys.path[:] = orjson.loads(path)
    scorers: list[CpuScorer[Any]] = pickle.loads(scorers_blob)
    channel.send(READY)
    while (frame := channel.recv()) is not None:
        for start, blob in split_batch(frame):
            job: Job = pickle.loads(blob)
            request = parse_request(job.request_body)
            for task in job.tasks[start:]:
                channel.send(run_task(scorers, job, task, request))


def split_batch(frame: bytes) -> list[tuple[int, memoryview]]:
    """A batch frame's jobs: (first task to run, pickled job) each."""
    view, offset, jobs = memoryview(frame), 0, []
    while offset < len(view):
        start, length = BATCH_ENTRY.unpack_from(view, offset)
        offset += BATCH_ENTRY.size
        jobs.append((start, view[offset : offset + length]))
        offset += length
    return jobs


def main() -> None:
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent_pid)
    # Scoring is background work: when a job wakes this process it must not preempt the
    # proxy's event loop (measured: at nice 0 it did, and primary latency suffered).
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # BrokenPipe/ConnectionReset: the proxy went away mid-answer; nothing waits for it.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(Channel(socket.socket(fileno=fd)))
