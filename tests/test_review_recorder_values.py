"""Values the NumPy frames path (recorder/frames.py, 4c4a52c) could mangle, stored exactly:
NUL bytes, non-BMP characters and a 1 MB text, an empty string beside NULL, -0.0, a start
time at the epoch and one in another time zone, and columns NULL in every row of a batch.
Real Recorder, writer thread and DuckDB file."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly

from tests.synthetic import synthetic_exchange

BIG = "ab\U0001f600\x00" * 250_000  # 1 MB of characters: NUL bytes and non-BMP in it


def test_hostile_values_are_stored_as_they_were(tmp_path: Path) -> None:
    db = tmp_path / "v.duckdb"
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(db), batch_size=5000, max_text_bytes=8 * 1024 * 1024)
    recorder = Recorder(config, metrics)
    exchanges = [synthetic_exchange(i) for i in range(3)]
    first, second, third = (e.results["small"].completion for e in exchanges)
    first.text, second.text, third.text = BIG, "", "\x00"
    first.latency_s, second.latency_s = -0.0, 0.0
    first.error, second.error = "", None
    exchanges[0].started_at = datetime(1970, 1, 1, tzinfo=UTC)
    exchanges[1].started_at = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=-11)))
    for exchange in exchanges:
        assert recorder.record(exchange)
    recorder.start()  # all of them in one batch
    recorder.close()
    sample = metrics.registry.get_sample_value
    assert sample("shadowtap_record_write_errors_total") == 0
    con = open_readonly(db)
    try:
        rows = con.execute(
            "SELECT r.text, r.latency_ms, r.error, r.ttft_ms, e.started_at FROM responses r "
            "JOIN exchanges e USING (request_id) WHERE r.target = 'small' ORDER BY e.request_id"
        ).fetchall()
    finally:
        con.close()
    by_text = {row[0]: row for row in rows}
    assert set(by_text) == {BIG, "", "\x00"}
    big, empty, nul = by_text[BIG], by_text[""], by_text["\x00"]
    assert big[1] == 0.0 and math.copysign(1.0, big[1]) == -1.0  # -0.0 kept its sign
    assert big[2] == "" and empty[2] is None  # an empty string is not NULL
    assert big[3] is None and empty[3] is None and nul[3] is None  # NULL in every row
    assert big[4] == datetime(1970, 1, 1, tzinfo=UTC)
    assert empty[4] == datetime(2026, 3, 29, 12, 30, tzinfo=UTC)
