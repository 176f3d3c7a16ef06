"""The memory bench's RSS split reads what it says: anonymous and file-backed pages of a real
process (this one), the resident pages of one mapped library, and a peak sampled while a
block runs."""

from __future__ import annotations

import os

import duckdb

from bench.harness import memory_kb
from bench.peer_memory import DUCKDB_LIBRARY, mapped_kb, peak_split, rss_split_kb
from tests.waiting import wait_for

MIB = 1024  # in kB, the unit of /proc


def test_the_split_adds_up_to_the_resident_set() -> None:
    anon, files = rss_split_kb(os.getpid())
    rss = memory_kb(os.getpid())[0]
    assert anon > 0 and files > 0
    # /proc/PID/status: VmRSS = RssAnon + RssFile + RssShmem (no shared memory here), each read
    # a moment apart, so allow the few pages the reads themselves touch.
    assert abs(rss - (anon + files)) < 2 * MIB


def test_mapped_kb_counts_only_the_library_named() -> None:
    assert duckdb.__file__  # DuckDB's extension module is loaded, so it is mapped
    assert mapped_kb(os.getpid(), DUCKDB_LIBRARY) > 0
    assert mapped_kb(os.getpid(), "/no-such-library-is-mapped.so") == 0


def test_peak_split_sees_memory_allocated_and_freed_inside_the_block() -> None:
    pid = os.getpid()
    before = rss_split_kb(pid)[0]
    size = 64 * MIB * 1024
    with peak_split(pid) as peaks:
        block = os.urandom(size)  # written, so every page is resident
        wait_for(lambda: peaks["anon_kb"] >= before + 60 * MIB)
        del block
    seen = peaks["anon_kb"]
    assert seen >= before + 60 * MIB
    # The sampler has stopped: the block is freed and nothing raises the peak any more.
    assert rss_split_kb(pid)[0] < seen
    assert peaks["anon_kb"] == seen


def test_peak_split_stops_quietly_when_the_process_is_gone() -> None:
    no_such_pid = 2**22 + 1  # above Linux's pid_max: never a live process
    with peak_split(no_such_pid) as peaks:
        pass
    assert peaks == {"anon_kb": 0, "file_kb": 0}
