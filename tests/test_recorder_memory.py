"""The recorder's memory is bounded in bytes: DuckDB's by `storage.memory_limit` (its own default
is 80% of the host's RAM) and by reopening the file as it fills; the writer's copies of a batch
by `storage.batch_max_bytes`. Multi-MB rows are still written, and a fatal DuckDB error
(an invalidated database) makes recording degraded for a moment, never dead, with every
exchange accounted for. Real DuckDB files in tmp_path, the real writer thread.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import Completion
from shadowtap.config import ConfigError, StorageConfig, parse_config
from shadowtap.exchange import Exchange
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly

from tests.synthetic import synthetic_exchange
from tests.waiting import wait_for as wait_for_condition

MB = 1024 * 1024


# Storage work here takes longer than the shared default wait.
wait_for = partial(wait_for_condition, timeout_s=60.0)


def value(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def make(path: Path, **storage: Any) -> tuple[Recorder, Metrics]:
    metrics = Metrics(CollectorRegistry())
    # Multi-MB rows take DuckDB seconds to checkpoint on a loaded machine: these tests read
    # the file after close(), so its final flush must not be cut short.
    config = StorageConfig(
        path=str(path), **{"flush_interval_ms": 20, "close_timeout_s": 120, **storage}
    )
    return Recorder(config, metrics, retry_min_s=0.05, retry_max_s=0.2), metrics


def big_exchange(i: int, megabytes: float) -> Exchange:
    """An exchange whose prompt and primary answer each carry `megabytes` of text that neither
    redaction nor DuckDB's compression shrinks (hex of random bytes)."""
    exchange = synthetic_exchange(i)
    text = os.urandom(int(megabytes * MB) // 2).hex()
    exchange.request_body = b'{"model":"m","messages":[{"role":"user","content":"%s"}]}' % (
        text.encode()
    )
    exchange.request_json = None
    exchange.results["primary"].completion = Completion(status=200, text=text, latency_s=0.1)
    return exchange


def stored(path: Path) -> int:
    con = open_readonly(path)
    try:
        row = con.execute("SELECT count(*) FROM exchanges").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def accounted(metrics: Metrics) -> float:
    return value(metrics, "shadowtap_records_written_total") + value(
        metrics, "shadowtap_record_write_errors_total"
    )


def record_all(recorder: Recorder, metrics: Metrics, exchanges: list[Exchange]) -> None:
    """Feed the recorder no faster than it writes (the proxy's memory budget does that)."""
    for i, exchange in enumerate(exchanges):
        assert recorder.record(exchange)
        wait_for(lambda i=i: accounted(metrics) >= i + 1 - 4)
    wait_for(lambda: accounted(metrics) >= len(exchanges))


def duckdb_spelling(limit: str) -> str:
    """How DuckDB itself reports `limit` (e.g. '256MB' reads back as '244.1 MiB')."""
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{limit}'")
        return str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
    finally:
        con.close()


def recorder_limit(tmp_path: Path, **storage: object) -> str:
    recorder, _ = make(tmp_path / "shadowtap.duckdb", **storage)
    recorder.start()
    try:
        return str(recorder.query("SELECT current_setting('memory_limit') AS m")[0]["m"])
    finally:
        recorder.close()


def test_the_recorder_bounds_duckdb_memory_by_default(tmp_path: Path) -> None:
    assert recorder_limit(tmp_path) == duckdb_spelling("256MB")


def test_the_bound_is_configurable(tmp_path: Path) -> None:
    assert recorder_limit(tmp_path, memory_limit="64 MiB") == duckdb_spelling("64MiB")


@pytest.mark.parametrize(
    "value", ["", "256", "lots", "1GB'; DROP TABLE exchanges; --", "-5MB", "80%", "1 TB"]
)
def test_a_bad_memory_limit_stops_the_start_naming_the_key(value: str) -> None:
    raw = {"primary": {"url": "http://127.0.0.1:9"}, "storage": {"memory_limit": value}}
    with pytest.raises(ConfigError, match=r"^config error: storage\.memory_limit: "):
        parse_config(raw, {})


def test_multi_mb_rows_are_all_written_under_the_limit(tmp_path: Path) -> None:
    """48 exchanges of a 1 MB prompt and a 1 MB answer, 96 MB, all queued at once, under a 64 MB
    limit. Batched by count (one 96 MB transaction) with a plain `SET memory_limit`, the write
    failed ("failed to pin block") and DuckDB then invalidated the database; in batches
    bounded in bytes every one of them is kept."""
    path = tmp_path / "big.duckdb"
    recorder, metrics = make(path, memory_limit="64MB", max_text_bytes=0)  # texts uncut
    for i in range(48):
        assert recorder.record(big_exchange(i, 1))
    recorder.start()
    try:
        wait_for(lambda: accounted(metrics) >= 48, timeout_s=120)
        assert value(metrics, "shadowtap_record_write_errors_total") == 0
        assert value(metrics, "shadowtap_records_written_total") == 48
        assert recorder.health() == {"recording": "ok"}
    finally:
        recorder.close()
    assert stored(path) == 48


def test_a_write_duckdb_cannot_fit_degrades_reopens_and_accounts_for_every_exchange(
    tmp_path: Path,
) -> None:
    """A limit far too small for the rows makes DuckDB fail commits ("failed to pin block",
    out of memory) and checkpoints (which can invalidate the database). The writer must never
    die of it: it reopens with backoff, counts the exchanges it could not store, never counts
    one DuckDB kept as failed, and writes small rows again afterwards."""
    path = tmp_path / "tiny.duckdb"
    recorder, metrics = make(path, memory_limit="24MB", max_text_bytes=0)  # texts uncut
    recorder.start()
    try:
        record_all(recorder, metrics, [big_exchange(i, 3) for i in range(24)])
        small = [synthetic_exchange(1000 + i) for i in range(50)]
        for exchange in small:
            assert recorder.record(exchange)
        wait_for(lambda: accounted(metrics) >= 74)
        wait_for(lambda: recorder.health() == {"recording": "ok"})
        assert value(metrics, "shadowtap_record_write_errors_total") > 0  # it did fail
        ids = [e.request_id for e in small]
        wait_for(lambda: recorder.query(_count_of(ids)) == [{"n": 50}])
    finally:
        recorder.close()
    assert recorder.health() == {"recording": "stopped"}
    # Every exchange is either in the file or counted as failed: none twice, none silently.
    assert stored(path) == value(metrics, "shadowtap_records_written_total")
    assert accounted(metrics) == 74


def _count_of(ids: list[str]) -> str:
    listed = ", ".join(f"'{i}'" for i in ids)
    return f"SELECT count(*) AS n FROM exchanges WHERE request_id IN ({listed})"


def test_batches_are_bounded_in_bytes(tmp_path: Path) -> None:
    """What waits in the queue is taken in batches of at most `batch_max_bytes` of text (one
    exchange bigger than that goes alone), not `batch_size` exchanges of any size."""
    path = tmp_path / "batches.duckdb"
    recorder, metrics = make(path, batch_max_bytes=3 * MB, flush_interval_ms=2000)
    # An exchange's bytes are given back right after its batch is counted as written, so the
    # written counter each one sees at its release names its batch.
    seen_at_release: list[float] = []
    lock = threading.Lock()

    def released(_held: int) -> None:
        with lock:
            seen_at_release.append(value(metrics, "shadowtap_records_written_total"))

    for i in range(12):
        exchange = big_exchange(i, 1)  # 1 MB of body and 1 MB of answer
        exchange.held_bytes, exchange.on_release = 1, released
        assert recorder.record(exchange)  # all queued before the writer starts
    recorder.start()
    try:
        wait_for(lambda: len(seen_at_release) == 12)
    finally:
        recorder.close()
    batches = Counter(seen_at_release)
    assert sum(batches.values()) == 12
    assert max(batches.values()) == 2, batches  # 2 MB < 3 MB: one more; 4 MB: the batch ends
    assert stored(path) == 12
