"""Where the report's working table lives, and how its selection is cut into slices.

DuckDB gets `MEMORY_LIMIT` and a private spill directory, so at fleet size it spills to disk
rather than growing. The working table (`report_pairs`, `shadowtap.report.selection`) is kept
in a database file in that directory (`WORK`): a file's tables are compressed (dictionary,
bit-packing, FSST), ~10x smaller than an in-memory table's, so 10 million pairs stay inside
the memory budget instead of being spilled and read back by every measure.

Above `SLICE_REQUESTS` requests the selection is built in slices: ranges of request ids, each
applied to every table before the joins, so each slice's joins and sort fit in memory (one pass
over 10 million pairs spilled ~8 GB). Every join of a pair is on its request id, so the slices
hold exactly the pairs of one pass; their ranges are in request order, so concatenating them
keeps the (target, request) order.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import duckdb

# DuckDB's share of the report's memory (the 2 GB budget of issue 15 leaves the rest to Python's
# columns): above it, DuckDB spills to the spill directory.
MEMORY_LIMIT = "1GB"
SPILL_PREFIX = "shadowtap-report-"
WORK = "shadowtap_report"  # the attached database that holds the working tables
# Requests per slice of the selection: one slice's joins and sort fit in MEMORY_LIMIT, and
# their hash tables stay small. Building 10 million synthetic pairs took a median of ~110
# CPU-s in slices of a million requests, ~92-94 in slices of 500,000 or 250,000 (~15% less
# work for the same joins), and 250,000 peaks ~230 MB lower.
SLICE_REQUESTS = 250_000
SAMPLED_IDS = 100_000  # request ids sampled to place the slices' bounds


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Bound DuckDB's memory, give it a private spill directory, attach the work database."""
    spill = _spill_directory()
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = '{_quoted(spill)}'")
    con.execute(
        f"ATTACH OR REPLACE '{_quoted(str(Path(spill) / 'work.duckdb'))}' AS {WORK} (READ_WRITE)"
    )


def ranges(con: duckdb.DuckDBPyConnection, exchanges: str) -> list[str]:
    """SQL conditions on `request_id` that cut the requests of `exchanges` into slices of
    about `SLICE_REQUESTS` (one, `true`, below that), in request order. The bounds come from a
    sample: it decides only how even the slices are, never which pairs there are."""
    found = con.execute(f"SELECT count(*) FROM {exchanges}").fetchone()
    requests = int(found[0]) if found else 0
    slices = -(-requests // SLICE_REQUESTS)
    if slices <= 1:
        return ["true"]
    points = [i / slices for i in range(1, slices)]
    found = con.execute(
        "SELECT quantile_disc(request_id, $points) FROM (SELECT request_id FROM"
        f" {exchanges} USING SAMPLE reservoir({SAMPLED_IDS} ROWS) REPEATABLE (15))",
        {"points": points},
    ).fetchone()
    bounds = sorted({b for b in (found[0] if found and found[0] else []) if b is not None})
    if not bounds:
        return ["true"]
    literals = [f"'{_quoted(b)}'" for b in bounds]
    return (
        [f"request_id < {literals[0]}"]
        + [
            f"request_id >= {low} AND request_id < {high}"
            for low, high in itertools.pairwise(literals)
        ]
        + [f"request_id >= {literals[-1]}"]
    )


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _spill_directory() -> str:
    """A private directory for DuckDB's spill files, removed at exit. A report that was killed
    (no exit handler runs) leaves its own behind: the next report removes those whose process
    is gone, so a crash costs the disk only until then."""
    base = Path(tempfile.gettempdir())
    for stale in base.glob(f"{SPILL_PREFIX}*-*"):
        pid = stale.name[len(SPILL_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
