"""Parquet roll-up read back with read_parquet, roll recovery, and retention."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, connect, create_pairs_view, parquet_relations
from shadowtap.recorder.parquet import PENDING_TABLE, roll
from shadowtap.recorder.schema import COLUMNS, TABLES

from tests.synthetic import synthetic_exchange

NOW = datetime.now(UTC)


def partitions(base: Path, table: str) -> list[str]:
    return sorted(p.name for p in (base / table).glob("date=*") if any(p.glob("*.parquet")))


def recorder_for(tmp_path: Path, **storage: object) -> Recorder:
    config = StorageConfig(
        path=str(tmp_path / "db" / "shadowtap.duckdb"),
        parquet_dir=str(tmp_path / "parquet"),
        flush_interval_ms=50,
        **storage,
    )
    return Recorder(config, Metrics(CollectorRegistry()), roll_interval_s=0.2)


def test_rolled_partitions_read_back_equal_to_the_tables(tmp_path: Path) -> None:
    base = tmp_path / "parquet"
    two_days_ago = NOW - timedelta(days=2)
    recorder = recorder_for(tmp_path)
    recorder.start()
    for i in range(30):
        recorder.record(synthetic_exchange(i, started_at=two_days_ago if i % 3 == 0 else NOW))
    # The periodic roll runs while serving, not only at close.
    deadline = time.monotonic() + 10
    while len(partitions(base, "scores")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(partitions(base, "scores")) == 2
    for i in range(30, 40):
        # NOW, not the clock: a run across midnight UTC would otherwise make a third day.
        recorder.record(synthetic_exchange(i, started_at=NOW))
    recorder.close()  # rolls the rest

    expected_days = sorted({f"date={d:%Y-%m-%d}" for d in (NOW, two_days_ago)})
    for table in TABLES:
        assert partitions(base, table) == expected_days
    # Unique file names per roll: several files in today's partition, none hidden left over.
    assert len(list((base / "exchanges" / expected_days[-1]).glob("*.parquet"))) >= 2
    assert not list(base.rglob(".*"))

    con = duckdb.connect()
    con.execute(f"ATTACH '{tmp_path / 'db' / 'shadowtap.duckdb'}' AS db (READ_ONLY)")
    for table, relation in zip(TABLES, parquet_relations(base), strict=True):
        cols = ", ".join(COLUMNS[table])
        in_db = con.execute(f"SELECT {cols} FROM db.{table} ORDER BY ALL").fetchall()
        in_parquet = con.execute(f"SELECT {cols} FROM {relation} ORDER BY ALL").fetchall()
        assert len(in_db) == {"exchanges": 40, "responses": 120, "scores": 160}[table]
        assert in_parquet == in_db
    # Responses follow their exchange's date, not the time they were rolled.
    old_responses = con.execute(
        f"SELECT count(*) FROM {parquet_relations(base)[1]} WHERE date = ?",
        [two_days_ago.date()],
    ).fetchall()
    assert old_responses == [(30,)]
    # The report's view over the fleet's Parquet matches the live view.
    create_pairs_view(con, *parquet_relations(base), name="fleet_pairs", temporary=True)
    query = "SELECT request_id, target, candidate_text, scores FROM {} ORDER BY ALL"
    assert (
        con.execute(query.format("fleet_pairs")).fetchall()
        == con.execute(query.format("db.pairs")).fetchall()
    )


def test_a_roll_interrupted_mid_way_is_redone_under_the_same_names(tmp_path: Path) -> None:
    base = tmp_path / "parquet"
    recorder = recorder_for(tmp_path)
    recorder.start()
    exchange = synthetic_exchange(1)
    recorder.record(exchange)
    recorder.close()
    # As if the process died after stamping a roll and writing part of a file.
    con = connect(tmp_path / "db" / "shadowtap.duckdb")
    con.execute(f"INSERT INTO {PENDING_TABLE} VALUES (?, 'roll-x')", [exchange.request_id])
    day = base / "responses" / f"date={exchange.started_at:%Y-%m-%d}"
    (day / "roll-x.parquet").write_bytes(b"PAR1 truncated garbage")
    assert roll(con, base) == 1
    assert con.execute(f"SELECT count(*) FROM {PENDING_TABLE}").fetchall() == [(0,)]
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{day / 'roll-x.parquet'}')").fetchall()
    assert rows == [(3,)]


def test_retention_deletes_old_rows_and_partitions(tmp_path: Path) -> None:
    base = tmp_path / "parquet"
    first = recorder_for(tmp_path)  # retention switched on later, with history on disk
    first.start()
    ages = {"old": NOW - timedelta(days=10), "recent": NOW - timedelta(days=1), "now": NOW}
    for i, started_at in enumerate(ages.values()):
        first.record(synthetic_exchange(i, started_at=started_at))
    first.close()
    old_day = f"date={ages['old']:%Y-%m-%d}"
    assert old_day in partitions(base, "exchanges")

    second = recorder_for(tmp_path, retention_days=3)
    second.start()  # retention runs when the writer starts, then hourly
    deadline = time.monotonic() + 10
    while second.query("SELECT count(*) AS n FROM exchanges")[0]["n"] != 2:
        assert time.monotonic() < deadline, "retention did not run"
        time.sleep(0.05)
    assert second.query("SELECT count(*) AS n FROM responses") == [{"n": 6}]
    assert second.query("SELECT count(*) AS n FROM scores") == [{"n": 8}]
    second.close()
    for table in TABLES:
        kept = partitions(base, table)
        assert old_day not in kept
        assert f"date={ages['recent']:%Y-%m-%d}" in kept


def test_retention_without_parquet_is_not_a_write_error(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(tmp_path / "r.duckdb"), retention_days=1, flush_interval_ms=50)
    recorder = Recorder(config, metrics)
    recorder.record(synthetic_exchange(0, started_at=NOW - timedelta(days=2)))
    recorder.record(synthetic_exchange(1))
    recorder.start()
    recorder.close()
    con = connect(tmp_path / "r.duckdb")
    # Written in the first batch, then the start-up retention pass removed the old one.
    assert con.execute("SELECT count(*) FROM exchanges").fetchall() == [(1,)]
    assert metrics.registry.get_sample_value("shadowtap_record_write_errors_total") == 0
    assert metrics.registry.get_sample_value("shadowtap_records_written_total") == 2


def test_roll_ids_do_not_repeat_when_processes_share_random_s_state() -> None:
    # Sidecars forked from one parent share `random`'s state; a roll id drawn from it repeats
    # whenever two of them roll in the same millisecond, and their files replace each other.
    import random

    from shadowtap.recorder.parquet import new_roll_id

    while True:
        started = time.time_ns() // 1_000_000
        random.seed(7)
        first = new_roll_id()
        random.seed(7)  # the other process, same state
        second = new_roll_id()
        if time.time_ns() // 1_000_000 == started:  # both in one millisecond: a fair test
            break
    assert first != second
    assert uuid.UUID(first).version == 7 and first[:13] == second[:13]  # time-ordered still
