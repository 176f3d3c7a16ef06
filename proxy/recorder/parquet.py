"""Parquet roll-up (`storage.parquet_dir`) and retention (`storage.retention_days`).

Layout, one file per table, UTC date and roll:

    <parquet_dir>/exchanges/date=2025-01-31/<roll-uuid7>.parquet
    <parquet_dir>/responses/date=2025-01-31/<roll-uuid7>.parquet
    <parquet_dir>/scores/date=2025-01-31/<roll-uuid7>.parquet

Roll ids are UUIDv7 with their random bits from the OS (`new_roll_id`), so any number of
sidecars can roll into one shared volume without name clashes, and the whole fleet reads as one
data set through `schema.parquet_relations`.

Exactly-once without a clock watermark (exchanges finish out of order): the writer inserts
each written request id into `_rollup_pending` in the same transaction as its rows. A roll
stamps the unstamped ids with a new roll id, writes each file to a hidden temporary name and
renames it into place, then deletes the stamped ids. If the process dies mid-roll, the stamp
survives and the next roll rewrites the same file names, replacing any partial output.
Responses and scores are partitioned by their exchange's `started_at`, so one request's rows
always share a date.

Replayed answers (`shadowtap replay --db` with a `parquet_dir` configured) roll the same way,
into the same folders, by `roll_replayed`: the replay records each answer's and each set of
scores' (request id, target) in `_rollup_replayed` in the transaction that writes them, and a
roll writes just those `responses` rows (marked by their `source` and `replay_run`) and
`scores` rows. The exchange and the primary's answer were rolled by the recorder that stored
them; rolling them again would count them twice. Conversely a live roll leaves out what a
replay added to a still-pending exchange (`LIVE_ONLY`): `roll_replayed` rolls that.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
from shadowtap.recorder.schema import COLUMNS, TABLES

PENDING_TABLE = "_rollup_pending"
PENDING_DDL = f"CREATE TABLE IF NOT EXISTS {PENDING_TABLE} (request_id VARCHAR, roll VARCHAR)"


REPLAYED_TABLE = "_rollup_replayed"
REPLAYED_DDL = (
    f"CREATE TABLE IF NOT EXISTS {REPLAYED_TABLE}"
    " (request_id VARCHAR, target VARCHAR, kind VARCHAR, roll VARCHAR)"
)
# What a `_rollup_replayed` row stands for: the target's answer, or its scores.
REPLAYED_KINDS = {"answer": "responses", "scores": "scores"}


# What a live roll copies of a pending exchange: not the rows a replay added to it. A replay
# answers only targets the exchange has no answer from, and rolls those answers and their
# scores itself (`roll_replayed`); when `serve` was killed before its roll and a replay ran in
# between, the exchange is still pending, and copying all its rows would put the replayed
# ones in Parquet twice.
_REPLAYED = "source LIKE 'replay%'"
LIVE_ONLY = {
    "exchanges": "",
    "responses": f"AND NOT coalesce(t.{_REPLAYED}, false)",
    "scores": (
        "AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.request_id = t.request_id"
        f" AND r.target = t.target AND r.{_REPLAYED})"
    ),
}


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _day(started_at: str = "e.started_at") -> str:
    return f"strftime({started_at} AT TIME ZONE 'UTC', '%Y-%m-%d')"


def new_roll_id() -> str:
    """A UUIDv7 whose random bits come from the OS, not from `random` (as request ids do):
    sidecars forked from one parent share the Mersenne Twister's state, and two of them
    rolling in the same millisecond would then write, and replace, each other's files."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return str(uuid.UUID(int=value))


def roll(con: duckdb.DuckDBPyConnection, parquet_dir: str | Path) -> int:
    """Write every exchange not yet rolled (and its responses and scores) to Parquet.

    Returns the number of exchanges rolled. Runs on the writer's connection and thread.
    """
    base = Path(parquet_dir)
    con.execute(f"UPDATE {PENDING_TABLE} SET roll = ? WHERE roll IS NULL", [new_roll_id()])
    rolls = [r[0] for r in con.execute(f"SELECT DISTINCT roll FROM {PENDING_TABLE}").fetchall()]
    rolled = 0
    for roll_id in sorted(rolls):
        ids = (
            f"SELECT e.request_id, {_day()} AS day FROM exchanges e "
            f"SEMI JOIN {PENDING_TABLE} p ON p.request_id = e.request_id AND p.roll = $roll"
        )
        days = [
            r[0]
            for r in con.execute(f"SELECT DISTINCT day FROM ({ids})", {"roll": roll_id}).fetchall()
        ]
        for day in days:
            for table in TABLES:
                cols = ", ".join(f"t.{c}" for c in COLUMNS[table])
                folder = base / table / f"date={day}"
                folder.mkdir(parents=True, exist_ok=True)
                final = folder / f"{roll_id}.parquet"
                # A dot name is invisible to `*.parquet` globs until the atomic rename.
                temporary = folder / f".{roll_id}.parquet.tmp"
                query = (
                    f"SELECT {cols} FROM {table} t SEMI JOIN ({ids}) i "
                    f"ON i.request_id = t.request_id AND i.day = $day {LIVE_ONLY[table]}"
                )
                # COPY cannot take parameters, so they are inlined as escaped literals.
                query = query.replace("$roll", "'" + roll_id.replace("'", "''") + "'")
                query = query.replace("$day", "'" + day + "'")
                row = con.execute(
                    f"COPY ({query}) TO {_quote(temporary)} (FORMAT parquet, COMPRESSION zstd)"
                ).fetchone()
                if row and row[0]:
                    os.replace(temporary, final)
                    if table == "exchanges":
                        rolled += int(row[0])
                else:
                    temporary.unlink(missing_ok=True)
        con.execute(f"DELETE FROM {PENDING_TABLE} WHERE roll = ?", [roll_id])
    return rolled


def roll_replayed(con: duckdb.DuckDBPyConnection, parquet_dir: str | Path) -> int:
    """Write every replayed answer and set of scores not yet rolled to Parquet; returns the
    number of answers rolled. Crash-safe as `roll` is: stamp, write hidden, rename, delete."""
    base = Path(parquet_dir)
    con.execute(REPLAYED_DDL)
    con.execute(f"UPDATE {REPLAYED_TABLE} SET roll = ? WHERE roll IS NULL", [new_roll_id()])
    rolls = [r[0] for r in con.execute(f"SELECT DISTINCT roll FROM {REPLAYED_TABLE}").fetchall()]
    rolled = 0
    for roll_id in sorted(rolls):
        for kind, table in REPLAYED_KINDS.items():
            # One row per (request, target) of this roll and kind, with its exchange's day.
            keys = (
                f"SELECT DISTINCT r.request_id, r.target, {_day()} AS day"
                f" FROM {REPLAYED_TABLE} r JOIN exchanges e ON e.request_id = r.request_id"
                f" WHERE r.roll = $roll AND r.kind = '{kind}'"
            )
            only = "AND t.source LIKE 'replay%'" if table == "responses" else ""
            literal_roll = "'" + roll_id.replace("'", "''") + "'"
            days = [
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT day FROM ({keys})".replace("$roll", literal_roll)
                ).fetchall()
            ]
            for day in days:
                cols = ", ".join(f"t.{c}" for c in COLUMNS[table])
                query = (
                    f"SELECT {cols} FROM {table} t SEMI JOIN ({keys}) k ON k.request_id ="
                    f" t.request_id AND k.target = t.target AND k.day = '{day}' {only}"
                ).replace("$roll", literal_roll)
                folder = base / table / f"date={day}"
                folder.mkdir(parents=True, exist_ok=True)
                count = _write(con, query, folder, roll_id)
                rolled += count if table == "responses" else 0
        con.execute(f"DELETE FROM {REPLAYED_TABLE} WHERE roll = ?", [roll_id])
    return rolled


def _write(con: duckdb.DuckDBPyConnection, query: str, folder: Path, roll_id: str) -> int:
    """COPY `query` to `folder/<roll_id>.parquet` atomically; the rows written (none: no file)."""
    final = folder / f"{roll_id}.parquet"
    temporary = folder / f".{roll_id}.parquet.tmp"  # invisible to `*.parquet` until renamed
    row = con.execute(
        f"COPY ({query}) TO {_quote(temporary)} (FORMAT parquet, COMPRESSION zstd)"
    ).fetchone()
    if row and row[0]:
        os.replace(temporary, final)
        return int(row[0])
    temporary.unlink(missing_ok=True)
    return 0


def apply_retention(
    con: duckdb.DuckDBPyConnection,
    retention_days: int,
    parquet_dir: str | Path | None,
    now: datetime | None = None,
) -> int:
    """Delete exchanges that started more than `retention_days` ago, with their responses,
    scores, replay claims and Parquet partitions (whole UTC days older than the cutoff's day).

    Returns the number of exchanges deleted.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    old = "SELECT request_id FROM exchanges WHERE started_at < $cutoff"
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("scores", "responses", "replay_claims", PENDING_TABLE):
            con.execute(f"DELETE FROM {table} WHERE request_id IN ({old})", {"cutoff": cutoff})
        row = con.execute(
            "DELETE FROM exchanges WHERE started_at < $cutoff", {"cutoff": cutoff}
        ).fetchone()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if parquet_dir is not None:
        _drop_partitions(Path(parquet_dir), cutoff.date())
    return int(row[0]) if row else 0


def _drop_partitions(base: Path, cutoff_day: date) -> None:
    for table in TABLES:
        folder = base / table
        if not folder.is_dir():
            continue
        for partition in folder.glob("date=*"):
            try:
                day = date.fromisoformat(partition.name.removeprefix("date="))
            except ValueError:
                continue  # not ours; never delete what we did not write
            if day < cutoff_day:
                # Other sidecars on the same volume may be deleting it too.
                shutil.rmtree(partition, ignore_errors=True)
