"""The cases of `bench/abuse.py`: one proxy per case, the probe, and what each case does.

A case is a candidate behaviour (or URL), a sampling rate and an `Abuse`: what runs beside the
probe (`start` before the first window, `window` during each of the case's probe windows,
`finish` after the last). Results land on the case's `CaseRun`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.abuse_fakes import FAULTS, primary_answer
from bench.harness import (
    PATH,
    Processes,
    counted_drops,
    memory_kb,
    metric_samples,
    total,
    wait_ready,
)

UNRESOLVABLE = "http://" + "x" * 70 + ".invalid:9"  # fails in the resolver, no query is sent
SAMPLED = 'outcome="sampled"'


class CaseRun:
    """One `shadowtap serve` for one case, and what was measured against it."""

    def __init__(
        self,
        label: str,
        primary: str,
        candidate: str,
        behaviour: str,
        workdir: Path,
        processes: Processes,
        args: argparse.Namespace,
        rate: float = 1.0,
        nofile: int | None = None,
    ) -> None:
        self.label, self.args = label, args
        url = f"{candidate}/{behaviour}" if behaviour in FAULTS else behaviour
        self.candidate_stats = f"{candidate}/__bench/stats"
        self.db = workdir / f"{label}.duckdb"
        self.log = workdir / f"{label}.log"
        config: dict[str, Any] = {
            "server": {"log_level": "warning", "shutdown_grace_s": 2.0},
            "primary": {"url": primary},
            "sampling": {"rate": rate},  # the shipped budgets, as a user runs it
            "candidates": {"candidate": {"url": url, "model": "candidate-model"}},
            "scorers": {
                "similarity": {"type": "text_similarity"},
                "schema": {"type": "json_schema_valid"},
            },
            "storage": {"path": str(self.db)},
        }
        self.port, self.admin = processes.shadowtap(config, workdir, stderr=self.log, nofile=nofile)
        self.proc = processes.children[-1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.windows: list[list[float]] = []  # probe latencies (s) per window
        self.control_windows: list[list[float]] = []  # the control's, in the same rounds
        self.requests = self.identical = 0
        self.mismatches: Counter[str] = Counter()
        self.notes: list[str] = []
        self.corpus: list[tuple[str, str]] = []  # (item, outcome) of the bad-input corpus
        self.checks: dict[str, str] = {}  # name -> SQL read back from DuckDB after the stop
        self.samples: dict[str, float] = {}
        self.rss_peak_kb = 0
        self.lost: float | None = None
        self.draining: asyncio.Future[None] | None = None

    @classmethod
    def for_case(
        cls,
        case: Case,
        primary: str,
        candidate: str,
        workdir: Path,
        processes: Processes,
        args: argparse.Namespace,
    ) -> CaseRun:
        return cls(
            case.name,
            primary,
            candidate,
            case.behaviour,
            workdir,
            processes,
            args,
            case.rate,
            case.nofile,
        )

    async def ready(self) -> None:
        await wait_ready(self.url + PATH, timeout_s=60)

    def count(self, ok: bool, what: str) -> None:
        self.requests += 1
        self.identical += ok
        if not ok:
            self.mismatches[what] += 1

    async def stop(self) -> None:
        """Read the peak RSS, SIGTERM, and keep reading /metrics while the proxy drains: its
        admin listener closes last, so the final read counts every exchange it sampled (a
        read before the stop would miss requests a client gave up on that are still queued)."""
        with contextlib.suppress(OSError):
            self.rss_peak_kb = memory_kb(self.proc.pid)[1]
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            self.samples = await metric_samples(self.admin)
        self.proc.terminate()
        self.draining = asyncio.ensure_future(self.read_while_draining())

    async def read_while_draining(self) -> None:
        while self.proc.poll() is None:
            try:
                self.samples = await metric_samples(self.admin)
            except (aiohttp.ClientError, OSError, TimeoutError):
                return
            await asyncio.sleep(0.05)


async def settle(run: CaseRun) -> None:
    """Wait for the proxy to exit, then count what reached DuckDB against what was sampled."""
    try:
        await asyncio.to_thread(run.proc.wait, 60)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        run.notes.append("did not exit within 60 s of SIGTERM")
    if run.draining is not None:
        await run.draining
    s = run.samples
    if not s:
        run.notes.append("no /metrics")
        return
    sampled = total(s, "shadowtap_sampling_decisions_total", SAMPLED)
    counted = counted_drops(s)
    try:
        import duckdb

        con = duckdb.connect(str(run.db), read_only=True)
        rows = con.execute("SELECT count(*) FROM exchanges").fetchall()[0][0]
        for name, sql in run.checks.items():
            got = con.execute(sql).fetchall()
            run.corpus.append((name, str(got[0][0]) if got else "not stored"))
        con.close()
    except Exception as error:  # a case that broke storage is a finding, not a harness failure
        run.notes.append(f"DuckDB unreadable: {type(error).__name__}")
        return
    run.lost = sampled - rows - counted
    if run.lost < 0:
        run.notes.append("lost < 0: the last /metrics read came before the last sample")
    shed = total(s, "shadowtap_shadow_requests_total", 'outcome="shed"')
    timeouts = total(s, "shadowtap_shadow_requests_total", 'outcome="timeout"')
    run.notes.insert(0, f"sampled {sampled:.0f} rows {rows} drops {counted:.0f}")
    if shed or timeouts:
        run.notes.append(f"shadows shed {shed:.0f} timed out {timeouts:.0f}")
    if run.mismatches:
        run.notes.append(
            "not identical: " + ", ".join(f"{k} x{v}" for k, v in run.mismatches.items())
        )


# Read back from the corpus case's DuckDB file after it stopped.
CORPUS_STORED = {
    "stored: non-string model (rows)": (
        "SELECT count(*) FROM exchanges WHERE request_body LIKE '%corpus-model-int%'"
    ),
    'stored: stream "false" as': (
        "SELECT any_value(stream) FROM exchanges WHERE request_body LIKE '%corpus-stream-false%'"
    ),
}


def chat(bench_id: str, stream: bool, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "model": "bench",
        "messages": [{"role": "user", "content": f"probe {bench_id}"}],
    }
    if stream:
        body["stream"] = True
    return orjson.dumps({**body, **extra})


def bench_headers(bench_id: str, stream: bool, content: str | None = None) -> dict[str, str]:
    headers = {
        "X-Bench-Id": bench_id,
        "X-Bench-Stream": "1" if stream else "0",
        "Content-Type": "application/json",
    }
    if content:
        headers["X-Bench-Content"] = content
    return headers


async def send(
    session: aiohttp.ClientSession,
    run: CaseRun,
    bench_id: str,
    body: bytes,
    stream: bool = False,
    path: str = PATH,
    content: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """Send one request, count whether the answer is the primary's byte for byte; the outcome."""
    try:
        async with session.post(
            run.url + path,
            data=body,
            timeout=aiohttp.ClientTimeout(total=run.args.request_timeout),
            headers={**bench_headers(bench_id, stream, content), **(headers or {})},
        ) as response:
            got = await response.read()
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        run.count(False, type(error).__name__)
        return type(error).__name__
    regex = '"' + "a" * 28 + '!"' if content == "regex" else None
    ok = status == 200 and got == primary_answer(bench_id, stream, regex)
    run.count(ok, f"status {status}" if status != 200 else "body differs")
    return "identical" if ok else f"status {status}" + ("" if status != 200 else ", body differs")


class Probe:
    """The open loop whose latency is compared: `--probe-rps`, one in three streamed."""

    def __init__(self, run: CaseRun, prefix: str, args: argparse.Namespace) -> None:
        self.run_, self.prefix, self.rps = run, prefix, args.probe_rps
        self.latencies: list[float] = []

    async def one(self, session: aiohttp.ClientSession, index: int) -> None:
        started = time.perf_counter()
        stream = index % 3 == 0
        bench_id = f"{self.prefix}-{index}"
        await send(session, self.run_, bench_id, chat(bench_id, stream), stream)
        self.latencies.append(time.perf_counter() - started)

    async def run(self, seconds: float) -> None:
        tasks = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            start = time.perf_counter()
            for index in range(int(self.rps * seconds)):
                delay = start + index / self.rps - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(self.one(session, index)))
            await asyncio.gather(*tasks)


class Abuse:
    """Nothing beside the probe: the candidate's behaviour is the whole case."""

    async def start(self, run: CaseRun, args: argparse.Namespace) -> None:
        return None

    async def window(self, run: CaseRun, args: argparse.Namespace, index: int) -> None:
        return None

    async def finish(self, run: CaseRun, args: argparse.Namespace) -> None:
        return None


@dataclass
class Case:
    name: str
    behaviour: str  # a FAULTS behaviour of the fake candidate, or a candidate URL
    abuse: Abuse = field(default_factory=Abuse)
    rate: float = 1.0
    quick: bool = True  # part of --quick
    nofile: int | None = None
