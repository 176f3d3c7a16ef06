"""Retention deletes an old exchange's replay claims with it (issue 14): a claim names an
exchange that no longer exists, and kept forever it would grow the file without bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, connect
from shadowtap.recorder.parquet import apply_retention

from tests.synthetic import synthetic_exchange

NOW = datetime.now(UTC)


def test_retention_deletes_the_replay_claims_of_the_exchanges_it_deletes(tmp_path: Path) -> None:
    path = tmp_path / "r.duckdb"
    recorder = Recorder(
        StorageConfig(path=str(path), flush_interval_ms=20), Metrics(CollectorRegistry())
    )
    old, recent = synthetic_exchange(0, started_at=NOW - timedelta(days=10)), synthetic_exchange(1)
    recorder.record(old)
    recorder.record(recent)
    recorder.start()
    recorder.close()
    con = connect(path)
    try:
        for exchange in (old, recent):
            con.execute(
                "INSERT INTO replay_claims VALUES (?, 'new', 'run-1', now())", [exchange.request_id]
            )
        assert apply_retention(con, 3, None) == 1
        claims = con.execute("SELECT request_id FROM replay_claims").fetchall()
        assert claims == [(recent.request_id,)]
    finally:
        con.close()
