"""The three sources give the same report: the DuckDB file, its Parquet roll-up, and the live
admin API of a running recorder (the real `api_routes`, served by aiohttp on loopback)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap.config import GatesConfig, StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, api_routes
from shadowtap.report import (
    SourceError,
    build_report,
    open_db,
    open_parquet,
    open_url,
    report_json,
)
from shadowtap.report.sources import fetch_pairs, parse_since
from shadowtap.scorers.registry import resolve_scorers

from tests.report_data import FLAKY, NOISE, PARAPHRASE, make_exchanges, write

GATES = GatesConfig(max_cost_ratio=2.0)
SHADOWTAP = Path(sys.executable).with_name("shadowtap")  # the installed console script
CANDIDATES = {"same": NOISE, "paraphrase": PARAPHRASE, "flaky": FLAKY}
SCORERS = {"similarity": {"type": "text_similarity", "threshold": 0.8}}  # as in the config


def comparable(report: Any) -> dict[str, Any]:
    """The report minus where it came from and when it was made."""
    data = report_json(report)
    for key in ("source", "generated_at", "notes"):
        data.pop(key)
    return data


def test_parquet_and_db_agree(tmp_path: Path) -> None:
    exchanges = make_exchanges(150, CANDIDATES, seed=4)
    db = write(exchanges, tmp_path / "s.duckdb", parquet_dir=tmp_path / "parquet")
    assert sorted(p.name for p in (tmp_path / "parquet").iterdir()) == [
        "exchanges",
        "responses",
        "scores",
    ]
    from_db = build_report(open_db(db), GATES)
    from_parquet = build_report(open_parquet(tmp_path / "parquet"), GATES)
    assert from_parquet.candidates["paraphrase"].verdict == "fail"
    assert comparable(from_parquet) == comparable(from_db)


def test_parquet_of_a_fleet_reads_as_one_data_set(tmp_path: Path) -> None:
    # Two sidecars roll into one directory: the report sees the pairs of both.
    for i, seed in enumerate((5, 6)):
        write(
            make_exchanges(40, {"same": NOISE}, seed=seed),
            tmp_path / f"pod{i}.duckdb",
            parquet_dir=tmp_path / "fleet",
        )
    report = build_report(open_parquet(tmp_path / "fleet"), GATES)
    assert report.candidates["same"].pairs == 80


def test_bad_sources_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_db(tmp_path / "missing.duckdb")
    with pytest.raises(SourceError, match="no Parquet files"):
        open_parquet(tmp_path)
    with pytest.raises(SourceError, match="--since"):
        parse_since("yesterday")
    with pytest.raises(SourceError, match="http"):
        open_url("localhost:9464")


def test_since_parsing() -> None:
    now = parse_since("2026-01-05T10:00:00+00:00")
    assert parse_since("24h", now=now) == parse_since("2026-01-04T10:00:00Z")
    assert parse_since("7d", now=now).isoformat() == "2025-12-29T10:00:00+00:00"
    assert parse_since("2026-01-05").isoformat() == "2026-01-05T00:00:00+00:00"


async def _running_recorder(path: Path, exchanges: list[Any]) -> Recorder:
    storage = StorageConfig(path=str(path), bodies="full", flush_interval_ms=20)
    recorder = Recorder(storage, Metrics(CollectorRegistry()))
    recorder.start()
    for exchange in exchanges:
        assert recorder.record(exchange)
    deadline = time.monotonic() + 10
    while recorder.query("SELECT count(*) AS n FROM exchanges")[0]["n"] < len(exchanges):
        assert time.monotonic() < deadline, "recorder did not write the exchanges"
        await asyncio.sleep(0.02)
    return recorder


async def test_url_reads_a_running_proxy_like_the_file(tmp_path: Path, aiohttp_server: Any) -> None:
    path = tmp_path / "live.duckdb"
    recorder = await _running_recorder(path, make_exchanges(120, CANDIDATES, seed=8))
    try:
        app = web.Application()
        app.add_routes(api_routes(recorder))
        server = await aiohttp_server(app)
        url = str(server.make_url("")).rstrip("/")
        # open_url is the blocking CLI path: run it off this (the server's) event loop.
        source = await asyncio.to_thread(open_url, url)
        live = await asyncio.to_thread(
            build_report, source, GATES, scorers=resolve_scorers(SCORERS)
        )
        # The API hands out the stored thresholds: no config is needed to know them.
        bare = await asyncio.to_thread(
            build_report, await asyncio.to_thread(open_url, url), GATES, candidates=["same"]
        )
        assert bare.candidates["same"].scorers[0].threshold is not None
        assert not any("no threshold known" in note for note in bare.notes)

        process = await asyncio.create_subprocess_exec(
            str(SHADOWTAP),
            "report",
            "--url",
            url,
            "--json",
            "--candidate",
            "same",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert b'"verdict": "pass"' in out
    finally:
        recorder.close()
    from_file = build_report(open_db(path), GATES)
    assert live.candidates["paraphrase"].verdict == "fail"
    assert comparable(live) == comparable(from_file)


async def test_url_pages_through_every_pair_and_says_when_it_stops(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    exchanges = make_exchanges(40, CANDIDATES, seed=3)
    recorder = await _running_recorder(tmp_path / "paged.duckdb", exchanges)
    try:
        app = web.Application()
        app.add_routes(api_routes(recorder))
        server = await aiohttp_server(app)
        url = str(server.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as session:
            whole = await fetch_pairs(session, url, page_size=7)
            cut = await fetch_pairs(session, url, page_size=7, max_pairs=14)
        stored = recorder.query("SELECT request_id, target FROM pairs")
    finally:
        recorder.close()
    keys = [(row["request_id"], row["target"]) for row in whole.rows]
    assert len(keys) == len(set(keys)) == len(stored)  # every pair once, across 7-row pages
    assert set(keys) == {(row["request_id"], row["target"]) for row in stored}
    assert whole.notes == [] and whole.thresholds
    assert len(cut.rows) == 14 * len({target for _, target in keys})
    assert any("only the newest 14 pairs of" in note for note in cut.notes)


async def test_url_errors_are_source_errors(aiohttp_server: Any) -> None:
    app = web.Application()
    server = await aiohttp_server(app)  # no routes: every path is a 404
    with pytest.raises(SourceError, match="HTTP 404"):
        await asyncio.to_thread(open_url, str(server.make_url("")))
