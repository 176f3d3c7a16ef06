"""Replayed answers roll to `storage.parquet_dir` as live exchanges do: the same folders,
marked as replayed, each row once, so `shadowtap report --parquet DIR` shows the replayed
candidate beside the live ones. Real DuckDB and Parquet files, a fake candidate on loopback,
the `shadowtap` command as a program."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig, parse_config
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, parquet_relations
from shadowtap.recorder.privacy import Privacy
from shadowtap.recorder.rows import to_columns
from shadowtap.recorder.store import Store
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.conftest import StartFake
from tests.replaying import NOWHERE, SCORERS
from tests.synthetic import synthetic_exchange

N = 24
ROOT = Path(__file__).resolve().parent.parent


def record(db: Path, parquet: Path) -> None:
    """`N` live exchanges, rolled to `parquet` when the recorder closes (as `serve` does)."""
    storage = StorageConfig(path=str(db), bodies="full", parquet_dir=str(parquet))
    recorder = Recorder(storage, Metrics(CollectorRegistry()))
    recorder.start()
    for i in range(N):
        recorder.record(synthetic_exchange(i))
    recorder.close(timeout_s=60)


def counts(parquet: Path, sql: str) -> list[tuple[Any, ...]]:
    exchanges, responses, scores = parquet_relations(parquet)
    con = duckdb.connect()
    try:
        query = sql.format(exchanges=exchanges, responses=responses, scores=scores)
        return con.execute(query).fetchall()
    finally:
        con.close()


async def test_replayed_answers_roll_to_parquet_and_the_report_shows_them(
    start_fake: StartFake, tmp_path: Path
) -> None:
    db, parquet = tmp_path / "shadowtap.duckdb", tmp_path / "parquet"
    record(db, parquet)
    live = counts(parquet, "SELECT target, count(*) FROM {responses} GROUP BY ALL ORDER BY ALL")
    candidate = await start_fake("ok")
    config = parse_config(
        {
            "primary": {"url": NOWHERE},
            "candidates": {"new": {"url": candidate.url, "timeout_s": 60}},
            "scorers": SCORERS,
            "storage": {"path": str(db), "bodies": "full", "parquet_dir": str(parquet)},
        },
        {},
    )
    summary = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert summary.complete and summary.recorded == N

    # The candidate's answers and scores, once each, marked; nothing recorded live rolled again.
    replayed = counts(
        parquet,
        "SELECT source, count(*), count(DISTINCT request_id), count(DISTINCT replay_run)"
        " FROM {responses} WHERE target = 'new' GROUP BY ALL",
    )
    assert replayed == [("replay", N, N, 1)]
    assert counts(parquet, "SELECT count(score) FROM {scores} WHERE target = 'new'") == [(N,)]
    assert counts(parquet, "SELECT count(*), count(DISTINCT request_id) FROM {exchanges}") == [
        (N, N)
    ]
    rest = "SELECT target, count(*) FROM {responses} WHERE target <> 'new' GROUP BY ALL"
    assert counts(parquet, rest + " ORDER BY ALL") == live
    # In the recorder's layout: one file per table, date and roll, none left hidden.
    assert {p.parent.parent.name for p in parquet.rglob("*.parquet")} == {
        "exchanges",
        "responses",
        "scores",
    }
    assert not list(parquet.rglob(".*"))

    # A second run sends nothing and rolls nothing twice.
    again = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert again.counts.attempts == 0
    assert counts(parquet, "SELECT count(*) FROM {responses} WHERE target = 'new'") == [(N,)]

    report = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "shadowtap.cli", "report", "--parquet", str(parquet), "--json"),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    stdout, _ = await report.communicate()
    assert report.returncode == 0
    candidates = json.loads(stdout)["candidates"]
    assert candidates["new"]["pairs"] == N
    assert candidates["new"]["replayed_pairs"] == N


def record_then_die(db: Path, parquet: Path) -> None:
    """`N` live exchanges written with their Parquet-pending ids, then no roll: what a `serve`
    killed before its roll leaves in the file."""
    store = Store.open(StorageConfig(path=str(db), bodies="full", parquet_dir=str(parquet)))
    exchanges = [synthetic_exchange(i) for i in range(N)]
    store.insert(to_columns(exchanges, Privacy("full")), [e.request_id for e in exchanges])
    store.close()


async def test_serve_rolling_after_a_replay_rolls_no_replayed_row_again(
    start_fake: StartFake, tmp_path: Path
) -> None:
    db, parquet = tmp_path / "shadowtap.duckdb", tmp_path / "parquet"
    record_then_die(db, parquet)
    candidate = await start_fake("ok")
    config = parse_config(
        {
            "primary": {"url": NOWHERE},
            "candidates": {"new": {"url": candidate.url, "timeout_s": 60}},
            "scorers": SCORERS,
            "storage": {"path": str(db), "bodies": "full", "parquet_dir": str(parquet)},
        },
        {},
    )
    summary = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert summary.complete and summary.recorded == N
    # `serve` starts again on the file and rolls what its killed run left pending.
    storage = StorageConfig(path=str(db), bodies="full", parquet_dir=str(parquet))
    recorder = Recorder(storage, Metrics(CollectorRegistry()))
    recorder.start()
    recorder.close(timeout_s=60)

    # Parquet holds exactly what the database holds: every row once.
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchall()
            for table in ("exchanges", "responses", "scores")
        }
        by_target = con.execute(
            "SELECT target, source, count(*) FROM responses GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()
    assert counts(parquet, "SELECT count(*) FROM {exchanges}") == stored["exchanges"]
    assert counts(parquet, "SELECT count(*) FROM {responses}") == stored["responses"]
    assert counts(parquet, "SELECT count(*) FROM {scores}") == stored["scores"]
    assert (
        counts(
            parquet, "SELECT target, source, count(*) FROM {responses} GROUP BY ALL ORDER BY ALL"
        )
        == by_target
    )
    assert ("new", "replay", N) in by_target
    dupes = (
        "SELECT count(*) FROM (SELECT request_id, target, scorer FROM {scores}"
        " GROUP BY ALL HAVING count(*) > 1)"
    )
    assert counts(parquet, dupes) == [(0,)]

    report = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "shadowtap.cli", "report", "--parquet", str(parquet), "--json"),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    stdout, _ = await report.communicate()
    assert report.returncode == 0
    assert json.loads(stdout)["candidates"]["new"]["pairs"] == N
