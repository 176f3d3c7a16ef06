"""SIGTERM loses nothing; kill -9 loses at most the last flush interval and leaves a readable
file. A child process records, the test signals it, then opens the file it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shadowtap.recorder import connect, open_readonly

REPO = Path(__file__).resolve().parent.parent

# The child mirrors the server's shutdown: SIGTERM -> Recorder.close() -> exit.
CHILD = """
import signal, sys, time
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder
from tests.synthetic import synthetic_exchange

path, mode, count, flush_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
metrics = Metrics(CollectorRegistry())
recorder = Recorder(StorageConfig(path=path, flush_interval_ms=flush_ms, batch_size=50), metrics)
recorder.start()

def on_term(signum, frame):
    recorder.close()
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
for i in range(count):
    recorder.record(synthetic_exchange(i))
if mode == "kill":
    # Everything so far is committed; then keep recording so the kill lands mid-write.
    while (metrics.registry.get_sample_value("shadowtap_records_written_total") or 0) < count:
        time.sleep(0.01)
    print("ready", flush=True)
    i = count
    while True:
        recorder.record(synthetic_exchange(i))
        i += 1
        time.sleep(0.0005)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def run_child(path: Path, mode: str, count: int, flush_ms: int, sig: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode, str(count), str(flush_ms)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        child.send_signal(sig)
        return child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_sigterm_writes_everything_still_queued(tmp_path: Path) -> None:
    path = tmp_path / "term.duckdb"
    # A one-minute flush interval: nothing is written before the signal arrives.
    assert run_child(path, "term", 300, 60_000, signal.SIGTERM) == 0
    con = open_readonly(path)
    counts = [
        con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
        for t in ("exchanges", "responses", "scores")
    ]
    assert counts == [300, 900, 1200]
    # close() checkpointed: no write-ahead log is left to replay.
    assert not Path(f"{path}.wal").exists()


def test_kill_9_leaves_a_readable_file_missing_at_most_the_last_flush(tmp_path: Path) -> None:
    path = tmp_path / "kill.duckdb"
    assert run_child(path, "kill", 200, 100, signal.SIGKILL) == -signal.SIGKILL
    con = connect(path)  # what the next `serve` does: replays the WAL
    exchanges = con.execute("SELECT count(*) FROM exchanges").fetchall()[0][0]
    # The 200 committed before "ready" survive; the ones recorded after may or may not.
    assert exchanges >= 200
    # Each batch is one transaction: no exchange is left with part of its rows.
    partial = con.execute(
        "SELECT count(*) FROM exchanges e WHERE "
        "(SELECT count(*) FROM responses r WHERE r.request_id = e.request_id) <> 3 OR "
        "(SELECT count(*) FROM scores s WHERE s.request_id = e.request_id) <> 4"
    ).fetchall()
    assert partial == [(0,)]
    orphans = con.execute(
        "SELECT count(*) FROM responses WHERE request_id NOT IN (SELECT request_id FROM exchanges)"
    ).fetchall()
    assert orphans == [(0,)]
    assert con.execute("SELECT count(*) FROM pairs").fetchall() == [(exchanges * 2,)]
