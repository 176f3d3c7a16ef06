"""Memory beside the bare floor: many long streams held open, and 1 MB prompts.

Every case starts fresh proxy processes, so each one's peak RSS (VmHWM, /proc) is that case's
alone. A proxy's RSS is its process's and its live descendants' (shadowtap's scorer workers,
started on the first sampled exchange; nginx's workers): memory the pod pays. The peak is the
sum of each process's own, an upper bound on the peak of the sum. Used by
`bench/peers.py --long`.

- long streams: `--streams-open` concurrent streams of `--stream-seconds` each, through the
  bare floor, shadowtap at 10% sampling with recording on, and the same with recording off
  (what the recorder's DuckDB and NumPy cost, apart from the proxy's own), one after the
  other in front of the same slow-streaming upstream: how many completed, peak RSS, ratios.
  A proxied stream holds two descriptors (the client's, the upstream's): when the open-file
  limit the bench could get is below that, it says so, since no proxy can then hold them all.
- large prompts: 1 MB chat requests, 16 at a time, through the bare floor, shadowtap with no
  request sampled and shadowtap with every request sampled to a candidate that sets its own
  `model` (the request rewritten for it, as most candidates need), and the same with recording
  off: RSS growth over idle, ratio. The prompt is prose (words and spaces, `PROMPT_TEXT`), as
  a real one is: the recorder cuts such a text before it scrubs it, while one 1 MB token (the
  bench's prompt before 2026-12-02 was `"x" * 1 MB`) it still scrubs whole
  (`shadowtap.recorder.precut`).

Each RSS is also split into anonymous memory (heaps, stacks, DuckDB's buffers: what the process
itself allocated) and pages of mapped files (the code of the interpreter and of every loaded
library: clean pages the kernel can drop and read back, shared with any process mapping the
same file). The second part is not the proxy's to choose: DuckDB's own code is 36-49 MB of it
at idle, and which of those it is depends on the page cache (a freshly installed library's
pages are mapped in larger runs), which is why the same idle proxy measured 115 or 131 MB.
The peaks of the split are sampled (`/proc/PID/status` every SAMPLE_S), the peak RSS is the
kernel's own high-water marks (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench import peer_servers
from bench.harness import (
    ANSWER_TEXT,
    PATH,
    STREAM_CHAT,
    memory_kb,
    shadowtap_config,
    tree_kb,
    wait_ready,
)
from bench.peer_load import concurrent_streams

UNRECORDED = "shadowtap 10%, recording off"
LONG_STREAM_CASES = (("bare", "bare"), ("shadowtap 10%", "tap10"), (UNRECORDED, "tap10-unrecorded"))
FD_SPARE = 1_000  # a proxy's descriptors besides its streams' (upstream pools, files, the loop)
PROMPT_BYTES = 1_000_000
# Prose without secrets: ~6-letter words, spaces, a full stop now and then.
_WORDS = ("the", "customer", "asked", "about", "their", "order", "and", "wanted", "a", "short")
_WORDS += ("summary", "of", "each", "ticket", "they", "opened", "last", "week")
PROMPT_TEXT = " ".join(
    _WORDS[(i * 5) % len(_WORDS)] + ("." if i % 13 == 12 else "") for i in range(200_000)
)[:PROMPT_BYTES]
PROMPT_REQUESTS = 160
PROMPT_CONCURRENCY = 16
SAMPLE_S = 0.05  # how often the RSS split is sampled during a case's load
DUCKDB_LIBRARY = "/_duckdb."  # the path of DuckDB's Python extension module, as mapped


CANDIDATE_MODEL = "bench-candidate"
# (name, kind, sampling rate). Recording off shows what the proxy holds of a sampled prompt
# apart from the recorder: its queue of bodies waiting for a batch, and DuckDB's buffer pool,
# which keeps the stored heads (storage.max_text_bytes each) whatever the concurrency.
PROMPT_CASES = (
    ("bare", "bare", 0.0),
    ("shadowtap unsampled", "tap0", 0.0),
    ("shadowtap sampled", "tap100", 1.0),
    ("shadowtap sampled, recording off", "tap100-unrecorded", 1.0),
)


def rss_split_kb(pid: int) -> tuple[int, int]:
    """(anonymous, mapped files) resident kB of a process and its live descendants (shadowtap's
    scorer workers), from /proc/PID/status."""
    anon, files = tree_kb(pid, "RssAnon", "RssFile")
    return anon, files


def mapped_kb(pid: int, needle: str) -> int:
    """Resident kB of the mappings whose path contains `needle` (/proc/PID/smaps)."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            inside = needle in line
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@contextmanager
def peak_split(pid: int) -> Iterator[dict[str, int]]:
    """Samples the process's RSS split while the block runs: `anon_kb` and `file_kb` hold the
    largest of each seen (the peak RSS itself is the kernel's VmHWM)."""
    peaks = {"anon_kb": 0, "file_kb": 0}
    done = threading.Event()

    def sample() -> None:
        while True:
            try:
                anon, files = rss_split_kb(pid)
            except (OSError, KeyError, ValueError):  # the process ended: nothing more to see
                return
            peaks["anon_kb"] = max(peaks["anon_kb"], anon)
            peaks["file_kb"] = max(peaks["file_kb"], files)
            if done.wait(SAMPLE_S):
                return

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        done.set()
        sampler.join()


def split_figures(pid: int, idle_split: tuple[int, int], peaks: dict[str, int]) -> dict[str, float]:
    return {
        "idle_anon_mb": idle_split[0] / 1024,
        "idle_file_mb": idle_split[1] / 1024,
        "idle_duckdb_code_mb": mapped_kb(pid, DUCKDB_LIBRARY) / 1024,
        "peak_anon_mb": peaks["anon_kb"] / 1024,
        "peak_file_mb": peaks["file_kb"] / 1024,
    }


def split_line(row: dict[str, float]) -> str:
    duckdb = row["idle_duckdb_code_mb"]
    return (
        f"anonymous idle {row['idle_anon_mb']:.0f} MB, peak {row['peak_anon_mb']:.0f} MB;"
        f" mapped files idle {row['idle_file_mb']:.0f} MB"
        f"{f' (DuckDB code {duckdb:.0f} MB)' if duckdb else ''},"
        f" peak {row['peak_file_mb']:.0f} MB"
    )


def _start(
    kind: str, upstream: str, candidate: dict[str, str], work: Path, rate: float, nofile: int
) -> Any:
    if kind == "bare":
        return peer_servers.bare(upstream, nofile)
    # server.max_connections (4,096 by default) closes what is beyond it: an operator holding
    # more streams open raises it, as the bench does, to the open-file limit it gives the proxy
    recording = not kind.endswith("-unrecorded")
    config = shadowtap_config(
        upstream,
        candidate,
        rate=rate,
        storage={"path": str(work / f"{kind}.duckdb")} if recording else {"enabled": False},
        server={"max_connections": nofile // 3},
    )
    process, url, _ = peer_servers.shadowtap(config, work, nofile)
    return process, url


def long_streams(args: argparse.Namespace) -> dict[str, Any]:
    count, seconds = args.streams_open, args.stream_seconds
    nofile = 3 * count + 1_000
    peer_servers.raise_nofile(nofile)
    notes = []
    granted = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if granted < 2 * count + FD_SPARE:
        notes.append(
            f"open-file limit {granted:,} (asked for {nofile:,}): {count:,} streams need"
            f" {2 * count + FD_SPARE:,} descriptors in a proxy (two each, and its own), so no"
            " proxy holds them all; shadowtap lowers server.max_connections to fit (it logs"
            " connection_cap_lowered) and refuses the rest, the bare floor's accepts fail"
        )
        print(f"long streams: {notes[-1]}", flush=True)
    events = len(ANSWER_TEXT.split())
    # started at most 400 a second (a listener's accept queue is short), all open at once
    ramp = min(0.75 * seconds, count / 400)
    result: dict[str, Any] = {"streams": count, "seconds": seconds, "notes": notes}
    children = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            gap = str(seconds / events)
            up, upstream = peer_servers.role("upstream", gap, nofile)
            cand, candidate = peer_servers.role("upstream", gap, nofile)
            children += [up, cand]
            for name, kind in LONG_STREAM_CASES:
                process, url = _start(kind, upstream, {"url": candidate}, work, 0.1, nofile)
                children.append(process)
                asyncio.run(wait_ready(url + PATH))
                idle = memory_kb(process.pid)[0]
                idle_split = rss_split_kb(process.pid)
                with peak_split(process.pid) as peaks:
                    done = asyncio.run(
                        concurrent_streams(url + PATH, STREAM_CHAT, count, ramp, 3 * seconds + 60)
                    )
                peak = memory_kb(process.pid)[1]
                completed = done.pop("completed", 0)
                result[name] = {
                    "completed": completed,
                    "failed": done,
                    "idle_mb": idle / 1024,
                    "peak_mb": peak / 1024,
                    **split_figures(process.pid, idle_split, peaks),
                }
                failed = ", ".join(f"{n} {kind}" for kind, n in sorted(done.items()))
                print(
                    f"long streams, {name}: {completed:,}/{count:,} of {seconds:g} s completed"
                    f"{f' (not: {failed})' if failed else ''},"
                    f" RSS idle {idle / 1024:.0f} MB, peak {peak / 1024:.0f} MB;"
                    f" {split_line(result[name])}",
                    flush=True,
                )
                peer_servers.stop([process])
    finally:
        peer_servers.stop(children)
    tap, bare = result["shadowtap 10%"], result["bare"]
    result["peak_ratio"] = tap["peak_mb"] / bare["peak_mb"]
    result["growth_ratio"] = (tap["peak_mb"] - tap["idle_mb"]) / max(
        bare["peak_mb"] - bare["idle_mb"], 1e-9
    )
    unrecorded = result[UNRECORDED]
    result["peak_ratio_unrecorded"] = unrecorded["peak_mb"] / bare["peak_mb"]
    result["peak_anon_ratio"] = tap["peak_anon_mb"] / max(bare["peak_anon_mb"], 1e-9)
    print(
        f"long streams: peak RSS shadowtap/bare {result['peak_ratio']:.2f}x (target <= 1.5x);"
        f" growth over idle {result['growth_ratio']:.2f}x; with recording off"
        f" {result['peak_ratio_unrecorded']:.2f}x; peak anonymous RSS shadowtap/bare"
        f" {result['peak_anon_ratio']:.2f}x"
    )
    return result


async def _prompts(url: str) -> int:
    import aiohttp

    body = orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": PROMPT_TEXT}]})
    ok = 0
    semaphore = asyncio.Semaphore(PROMPT_CONCURRENCY)
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            nonlocal ok
            async with semaphore, session.post(url, data=body) as response:
                await response.read()
                ok += response.status == 200

        await asyncio.gather(*(one() for _ in range(PROMPT_REQUESTS)))
    return ok


def large_prompts(args: argparse.Namespace) -> dict[str, Any]:
    del args
    result: dict[str, Any] = {"prompt_bytes": PROMPT_BYTES, "concurrency": PROMPT_CONCURRENCY}
    children = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            up, upstream = peer_servers.role("upstream", "0")
            cand, candidate = peer_servers.role("upstream", "0")
            children += [up, cand]
            for name, kind, rate in PROMPT_CASES:
                target = {"url": candidate, "model": CANDIDATE_MODEL}
                process, url = _start(kind, upstream, target, work, rate, 20_000)
                children.append(process)
                asyncio.run(wait_ready(url + PATH))
                idle = memory_kb(process.pid)[0]
                idle_split = rss_split_kb(process.pid)
                with peak_split(process.pid) as peaks:
                    ok = asyncio.run(_prompts(url + PATH))
                peak = memory_kb(process.pid)[1]
                result[name] = {
                    "answered": ok,
                    "idle_mb": idle / 1024,
                    "peak_mb": peak / 1024,
                    "growth_mb": (peak - idle) / 1024,
                    **split_figures(process.pid, idle_split, peaks),
                }
                print(
                    f"1 MB prompts, {name}: {ok}/{PROMPT_REQUESTS} answered, RSS idle"
                    f" {idle / 1024:.0f} MB, peak {peak / 1024:.0f} MB"
                    f" (+{(peak - idle) / 1024:.0f} MB); {split_line(result[name])}",
                    flush=True,
                )
                peer_servers.stop([process])
    finally:
        peer_servers.stop(children)
    bare = result["bare"]
    for name, _, _ in PROMPT_CASES[1:]:
        result[name]["peak_ratio"] = result[name]["peak_mb"] / bare["peak_mb"]
        result[name]["growth_ratio"] = result[name]["growth_mb"] / max(bare["growth_mb"], 1e-9)
        print(
            f"1 MB prompts: {name}/bare peak RSS {result[name]['peak_ratio']:.2f}x,"
            f" growth over idle {result[name]['growth_ratio']:.2f}x"
        )
    return result
