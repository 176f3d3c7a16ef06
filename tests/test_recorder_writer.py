"""The writer: batching, overflow, write errors, flush on close. Real DuckDB, real threads."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, RecorderClosed, open_readonly
from shadowtap.recorder.store import CHECKPOINT_THRESHOLD

from tests.synthetic import synthetic_exchange
from tests.waiting import wait_for


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def written(metrics: Metrics) -> float:
    return sample(metrics, "shadowtap_records_written_total")


def make(tmp_path: Path, **storage: object) -> tuple[Recorder, Metrics, Path]:
    path = tmp_path / "shadowtap.duckdb"
    metrics = Metrics(CollectorRegistry())
    return Recorder(StorageConfig(path=str(path), **storage), metrics), metrics, path


def counts(path: Path) -> tuple[int, int, int]:
    con = open_readonly(path)
    try:
        return tuple(  # type: ignore[return-value]
            con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("exchanges", "responses", "scores")
        )
    finally:
        con.close()


def test_a_full_batch_is_written_without_waiting_for_the_interval(tmp_path: Path) -> None:
    recorder, metrics, path = make(tmp_path, flush_interval_ms=60_000, batch_size=5)
    recorder.start()
    for i in range(8):
        recorder.record(synthetic_exchange(i))
    wait_for(lambda: written(metrics) == 5, timeout_s=5)
    # The remaining 3 are neither a full batch nor a minute old: they wait.
    time.sleep(0.3)
    assert written(metrics) == 5
    assert recorder.query("SELECT count(*) AS n FROM exchanges") == [{"n": 5}]
    recorder.close()
    assert written(metrics) == 8
    assert counts(path) == (8, 24, 32)


def test_a_partial_batch_is_written_after_the_flush_interval(tmp_path: Path) -> None:
    recorder, metrics, _ = make(tmp_path, flush_interval_ms=300, batch_size=1000)
    recorder.start()
    started = time.monotonic()
    for i in range(3):
        recorder.record(synthetic_exchange(i))
    wait_for(lambda: written(metrics) == 3, timeout_s=5)
    assert 0.25 <= time.monotonic() - started < 3
    recorder.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    recorder, metrics, path = make(tmp_path, queue_max=3)
    # Not started: nothing drains the queue, as when the disk stalls.
    began = time.perf_counter()
    accepted = [recorder.record(synthetic_exchange(i)) for i in range(5)]
    assert time.perf_counter() - began < 0.5
    assert accepted == [True, True, True, False, False]
    assert sample(metrics, "shadowtap_records_dropped_total") == 2
    assert sample(metrics, "shadowtap_record_queue_depth") == 3
    recorder.start()
    recorder.close()
    assert counts(path) == (3, 9, 12)
    assert sample(metrics, "shadowtap_record_queue_depth") == 0
    # After close nothing is accepted, and that too is counted.
    assert recorder.record(synthetic_exchange(9)) is False
    assert sample(metrics, "shadowtap_records_dropped_total") == 3


def test_a_write_error_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    recorder, metrics, path = make(tmp_path, flush_interval_ms=100)
    bad = synthetic_exchange(1)
    # Hostile input is stored whatever it is (test_recorder_hostile.py); a value of the wrong
    # type from our own code is what can still fail a write.
    bad.started_at = "not a moment"  # type: ignore[assignment]
    recorder.record(synthetic_exchange(0))
    recorder.record(bad)
    recorder.record(synthetic_exchange(2))
    recorder.start()  # all three land in one batch: the bad one must not sink the others
    wait_for(lambda: sample(metrics, "shadowtap_record_write_errors_total") == 1)
    wait_for(lambda: written(metrics) == 2)
    recorder.record(synthetic_exchange(3))
    wait_for(lambda: written(metrics) == 3)
    recorder.close()
    assert counts(path) == (3, 9, 12)
    con = open_readonly(path)
    ids = {r[0] for r in con.execute("SELECT request_id FROM exchanges").fetchall()}
    assert bad.request_id not in ids
    # A failed exchange leaves no partial rows behind (its batch is one transaction).
    orphans = con.execute(
        "SELECT count(*) FROM responses WHERE request_id NOT IN (SELECT request_id FROM exchanges)"
    ).fetchall()
    assert orphans == [(0,)]


def test_close_writes_everything_queued_with_errors_and_timeouts_as_rows(tmp_path: Path) -> None:
    recorder, metrics, path = make(tmp_path, flush_interval_ms=60_000, batch_size=10_000)
    recorder.start()
    exchanges = [synthetic_exchange(i, stream=i % 2 == 0) for i in range(200)]
    timed_out = exchanges[0].results["secondary"].completion
    timed_out.status, timed_out.error, timed_out.text = None, "timeout after 60 s", None
    for exchange in exchanges:
        assert recorder.record(exchange)
    recorder.close()
    assert written(metrics) == 200
    assert counts(path) == (200, 600, 800)
    con = open_readonly(path)
    per_target = con.execute(
        "SELECT target, role, count(*), count(*) FILTER (WHERE candidate_error IS NOT NULL) "
        "FROM pairs GROUP BY ALL ORDER BY target"
    ).fetchall()
    # synthetic_exchange makes every tenth candidate answer a 500.
    assert per_target == [("secondary", "secondary", 200, 1), ("small", "candidate", 200, 20)]
    row = con.execute(
        "SELECT candidate_status, candidate_error FROM pairs "
        "WHERE request_id = ? AND target = 'secondary'",
        [exchanges[0].request_id],
    ).fetchall()
    assert row == [(None, "timeout after 60 s")]
    stored = con.execute(
        "SELECT started_at, stream FROM exchanges WHERE request_id = ?",
        [exchanges[1].request_id],
    ).fetchall()
    assert stored == [(exchanges[1].started_at, False)]
    assert stored[0][0].utcoffset().total_seconds() == 0


def test_query_after_close_is_refused(tmp_path: Path) -> None:
    recorder, _, _ = make(tmp_path)
    recorder.start()
    assert recorder.query("SELECT count(*) AS n FROM pairs") == [{"n": 0}]
    recorder.close()
    with pytest.raises(RecorderClosed):
        recorder.query("SELECT 1")


def test_writer_checkpoints_at_its_own_wal_threshold_not_duckdbs_default(tmp_path: Path) -> None:
    # 16 MB (DuckDB's default) rewrites the same row group every few batches; see writer.py.
    sql = "SELECT current_setting('checkpoint_threshold') AS threshold"
    reference = duckdb.connect()
    default = reference.execute(sql).fetchall()
    reference.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
    expected = reference.execute(sql).fetchall()
    assert expected != default
    recorder, _, _ = make(tmp_path)
    recorder.start()
    try:
        assert recorder.query(sql) == [{"threshold": expected[0][0]}]
    finally:
        recorder.close()


def test_a_close_that_times_out_counts_the_batch_in_the_writers_hands(tmp_path: Path) -> None:
    # The writer has taken the exchanges off the queue (gathering a batch) when close() gives
    # up at once: they are neither written nor queued, so close() must count them as dropped.
    recorder, metrics, _ = make(tmp_path, flush_interval_ms=60_000, batch_size=1_000)
    recorder.start()
    for i in range(20):
        recorder.record(synthetic_exchange(i))
    wait_for(lambda: sample(metrics, "shadowtap_record_queue_depth") == 0, timeout_s=5)
    recorder.close(timeout_s=0.0)
    accounted = written(metrics) + sample(metrics, "shadowtap_records_dropped_total")
    assert accounted >= 20, f"{accounted} of 20 exchanges written or counted at close"
    recorder.close(timeout_s=30)  # let the writer thread finish before the interpreter exits
