"""A close that runs out of time interrupts the writer inside DuckDB, counts what it had not
written, and the process exits 0. Before, close() returned with the writer still in DuckDB and
the interpreter's teardown then killed it there: "terminate called after throwing", exit 134,
in 5 of 6 runs of the child below
(so 3 clean runs in a row do not happen by luck). Real DuckDB files, real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, connect

from tests.synthetic import synthetic_exchange
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
COUNT = 20_000

# Many short statements back to back: whenever close() gives up, the writer is inside DuckDB.
CHILD = """
import sys, time
import orjson
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder
from tests.synthetic import synthetic_exchange

path, count = sys.argv[1], int(sys.argv[2])
metrics = Metrics(CollectorRegistry())
config = StorageConfig(path=path, flush_interval_ms=1, batch_size=50, queue_max=count)
recorder = Recorder(config, metrics)
distinct = [synthetic_exchange(i) for i in range(500)]  # each recorded many times: quicker
for i in range(count):
    recorder.record(distinct[i % 500])
recorder.start()
time.sleep(0.3)
started = time.monotonic()
recorder.close(timeout_s=0.1)
value = metrics.registry.get_sample_value
print(orjson.dumps({
    "close_s": time.monotonic() - started,
    "written": value("shadowtap_records_written_total") or 0,
    "dropped": value("shadowtap_records_dropped_total") or 0,
    "errors": value("shadowtap_record_write_errors_total") or 0,
}).decode(), flush=True)
"""


def run_child(path: Path) -> tuple[int, dict[str, float], str]:
    paths = [p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(COUNT)],
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    lines = done.stdout.decode().splitlines()
    figures = orjson.loads(lines[-1]) if lines else {}
    return done.returncode, figures, done.stderr.decode()[-2000:]


def test_a_close_that_times_out_mid_write_exits_cleanly_with_every_exchange_counted(
    tmp_path: Path,
) -> None:
    for run in range(3):
        path = tmp_path / f"close-{run}.duckdb"
        code, figures, stderr = run_child(path)
        assert code == 0, f"run {run}: exit {code}: {stderr}"
        assert figures["close_s"] < 0.1 + 1.5  # the timeout, then at most UNWIND_S to unwind
        assert figures["errors"] == 0  # an interrupted batch is dropped, not a storage error
        # Every exchange is written or counted as dropped, none twice, and what the file holds
        # (its WAL replayed at the next open) is exactly what was counted as written.
        assert figures["written"] + figures["dropped"] == COUNT
        con = connect(path)
        try:
            row = con.execute("SELECT count(*) FROM exchanges").fetchone()
        finally:
            con.close()
        assert row is not None and row[0] == figures["written"]


def test_an_abandoned_writer_leaves_the_file_to_be_opened_again(tmp_path: Path) -> None:
    # Closed without a checkpoint: the next recorder on the file replays the WAL and goes on.
    path = tmp_path / "again.duckdb"
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(path), flush_interval_ms=1, batch_size=50, queue_max=COUNT)
    recorder = Recorder(config, metrics)
    for i in range(COUNT):
        recorder.record(synthetic_exchange(i))
    recorder.start()
    written_total = "shadowtap_records_written_total"
    wait_for(lambda: (metrics.registry.get_sample_value(written_total) or 0) > 0)
    started = time.monotonic()
    recorder.close(timeout_s=0.0)
    assert time.monotonic() - started < 1.5
    assert recorder.health() == {"recording": "stopped"}
    written = metrics.registry.get_sample_value("shadowtap_records_written_total") or 0
    dropped = metrics.registry.get_sample_value("shadowtap_records_dropped_total") or 0
    assert written + dropped == COUNT and dropped > 0

    again = Recorder(StorageConfig(path=str(path)), Metrics(CollectorRegistry()))
    again.start()
    try:
        extra = synthetic_exchange(COUNT)
        assert again.record(extra)
        wait_for(lambda: again.query("SELECT count(*) AS n FROM exchanges") == [{"n": written + 1}])
    finally:
        again.close()


def test_close_waits_for_a_writer_that_finishes_in_time(tmp_path: Path) -> None:
    # The bound is a bound, not a sleep: a quick flush writes everything, drops nothing.
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(StorageConfig(path=str(tmp_path / "quick.duckdb")), metrics)
    recorder.start()
    for i in range(100):
        assert recorder.record(synthetic_exchange(i))
    recorder.close()
    assert metrics.registry.get_sample_value("shadowtap_records_written_total") == 100
    assert (metrics.registry.get_sample_value("shadowtap_records_dropped_total") or 0) == 0
