"""Storage faults are never silent and never stop production: a file that cannot be opened,
a folder deleted while serving, a full disk. Recording turns degraded (health, gauge, one log
line), retries, and every exchange it could not keep is counted. Real files, real threads,
real processes where a lock or a file-size limit is needed."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import openai
import orjson
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, RecorderClosed, open_readonly
from structlog.testing import capture_logs

from tests.conftest import StartFake
from tests.serving import SHADOWTAP, free_port, wait_until_ready
from tests.synthetic import synthetic_exchange
from tests.waiting import wait_for as wait_for_condition

REPO = Path(__file__).resolve().parent.parent


# Storage work here takes longer than the shared default wait.
wait_for = partial(wait_for_condition, timeout_s=15.0)


def value(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def make(path: Path, **storage: Any) -> tuple[Recorder, Metrics]:
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(path), flush_interval_ms=20, **storage)
    return Recorder(config, metrics, retry_min_s=0.05, retry_max_s=0.2), metrics


def stored_ids(path: Path) -> set[str]:
    con = open_readonly(path)
    try:
        return {r[0] for r in con.execute("SELECT request_id FROM exchanges").fetchall()}
    finally:
        con.close()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_a_folder_where_the_file_should_be_degrades_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "shadowtap.duckdb"
    path.mkdir()  # as a bad volume mount leaves it: start must not raise
    recorder, metrics = make(path)
    with capture_logs() as logs:
        recorder.start()
        health = recorder.health()
        assert health["recording"] == "degraded"
        assert str(path) in health["reason"]
        assert value(metrics, "shadowtap_recording_degraded") == 1
        with pytest.raises(RecorderClosed, match="degraded"):
            recorder.query("SELECT 1")
        waiting = [synthetic_exchange(i) for i in range(5)]
        assert all(recorder.record(e) for e in waiting)  # queued while degraded
        time.sleep(0.5)  # several retries fail meanwhile: still one log line
        path.rmdir()
        wait_for(lambda: value(metrics, "shadowtap_records_written_total") == 5)
        assert recorder.health() == {"recording": "ok"}
        assert value(metrics, "shadowtap_recording_degraded") == 0
        assert recorder.query("SELECT count(*) AS n FROM exchanges") == [{"n": 5}]
        recorder.close()
    assert len(events(logs, "recording_degraded")) == 1
    assert len(events(logs, "recording_recovered")) == 1
    assert not any("exc_info" in e or "exception" in e for e in logs)  # no traceback
    assert stored_ids(path) == {e.request_id for e in waiting}


def test_a_path_under_a_file_never_raises_and_counts_what_it_drops(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    recorder, metrics = make(blocker / "shadowtap.duckdb", queue_max=3)
    recorder.start()
    assert recorder.health()["recording"] == "degraded"
    accepted = [recorder.record(synthetic_exchange(i)) for i in range(5)]
    assert accepted == [True, True, True, False, False]  # up to the bound, then dropped
    recorder.close()
    # The two over the bound, then the three still queued when it closed degraded.
    assert value(metrics, "shadowtap_records_dropped_total") == 5
    assert recorder.health() == {"recording": "stopped"}


LOCK_HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
con.close()
"""


def test_a_file_locked_by_another_process_degrades_until_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "shadowtap.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        recorder, metrics = make(path)
        recorder.start()
        assert recorder.health()["recording"] == "degraded"
        assert "lock" in recorder.health()["reason"].lower()
        exchanges = [synthetic_exchange(i) for i in range(4)]
        for exchange in exchanges:
            assert recorder.record(exchange)
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0
        wait_for(lambda: value(metrics, "shadowtap_records_written_total") == 4)
        assert recorder.health() == {"recording": "ok"}
        recorder.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert stored_ids(path) == {e.request_id for e in exchanges}


def record_and_wait(recorder: Recorder, metrics: Metrics, exchanges: list[Exchange]) -> None:
    before = value(metrics, "shadowtap_records_written_total")
    for exchange in exchanges:
        assert recorder.record(exchange)
    wait_for(lambda: value(metrics, "shadowtap_records_written_total") == before + len(exchanges))


@pytest.mark.parametrize("removed", ["folder", "file"])
def test_a_storage_deleted_while_serving_is_recreated_and_its_loss_counted(
    tmp_path: Path, removed: str
) -> None:
    folder = tmp_path / "volume"
    path = folder / "shadowtap.duckdb"
    recorder, metrics = make(path)
    recorder.start()
    first = [synthetic_exchange(i) for i in range(10)]
    record_and_wait(recorder, metrics, first)
    with capture_logs() as logs:
        if removed == "folder":
            shutil.rmtree(folder)
        else:
            for leftover in folder.iterdir():
                leftover.unlink()
        later = [synthetic_exchange(i) for i in range(10, 25)]
        record_and_wait(recorder, metrics, later)
        recorder.close()
    # What was in the deleted file is gone, and counted; nothing written after is lost.
    assert value(metrics, "shadowtap_records_lost_total") == 10
    assert value(metrics, "shadowtap_record_write_errors_total") == 0
    assert stored_ids(path) == {e.request_id for e in later}
    [degraded] = events(logs, "recording_degraded")
    assert degraded["lost"] == 10
    assert len(events(logs, "recording_recovered")) == 1


def test_a_deleted_file_is_rolled_to_parquet_from_the_open_handle_first(tmp_path: Path) -> None:
    # With a roll-up on another volume, the rows of the deleted file are not lost: the
    # writer's handle still reads the unlinked file, and rolls it before letting go.
    path = tmp_path / "volume" / "shadowtap.duckdb"
    parquet_dir = tmp_path / "parquet"
    recorder, metrics = make(path, parquet_dir=str(parquet_dir))
    recorder.start()
    first = [synthetic_exchange(i) for i in range(10)]
    record_and_wait(recorder, metrics, first)
    shutil.rmtree(path.parent)
    later = [synthetic_exchange(i) for i in range(10, 15)]
    record_and_wait(recorder, metrics, later)
    recorder.close()
    assert value(metrics, "shadowtap_records_lost_total") == 0
    con = open_readonly(path)
    try:
        rolled = con.execute(
            "SELECT request_id FROM read_parquet(?, hive_partitioning = true)",
            [str(parquet_dir / "exchanges" / "*" / "*.parquet")],
        ).fetchall()
    finally:
        con.close()
    ids = [r[0] for r in rolled]
    assert sorted(ids) == sorted(e.request_id for e in first + later)  # each exactly once


FULL_DISK = """
import json, resource, signal, sys, time
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.log import configure_logging
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder
from tests.synthetic import synthetic_exchange

configure_logging()  # JSON lines on stderr, as serve writes them
path = sys.argv[1]
metrics = Metrics(CollectorRegistry())
value = lambda name: metrics.registry.get_sample_value(name) or 0.0
config = StorageConfig(path=path, flush_interval_ms=20, batch_size=50)
recorder = Recorder(config, metrics, retry_min_s=0.05, retry_max_s=0.2)
recorder.start()
# A file-size limit is a disk that is full for this process: writes past it fail (EFBIG).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 18, hard))
big = "x" * 5_000
accepted = 0
for i in range(400):
    accepted += recorder.record(synthetic_exchange(i, extra=big))
    time.sleep(0.002)
deadline = time.monotonic() + 20
while value("shadowtap_record_write_errors_total") == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
# Still full: it stays degraded (reopening works, writing does not) and keeps counting.
states, gauge = set(), set()
for i in range(400, 420):
    accepted += recorder.record(synthetic_exchange(i, extra=big))
    states.add(recorder.health()["recording"])
    gauge.add(value("shadowtap_recording_degraded"))
    time.sleep(0.05)
full = {"states": sorted(states), "gauge": sorted(gauge),
        "errors": value("shadowtap_record_write_errors_total")}
# Space is back.
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
before = value("shadowtap_records_written_total")
for i in range(420, 430):
    recorder.record(synthetic_exchange(i))
deadline = time.monotonic() + 20
while value("shadowtap_records_written_total") < before + 10 and time.monotonic() < deadline:
    time.sleep(0.05)
after = {"health": recorder.health(), "degraded": value("shadowtap_recording_degraded")}
recorder.close()
print(json.dumps({"full": full, "after": after, "accepted": accepted,
                  "written": value("shadowtap_records_written_total"),
                  "errors": value("shadowtap_record_write_errors_total"),
                  "dropped": value("shadowtap_records_dropped_total")}))
"""


def test_a_full_disk_counts_every_lost_exchange_and_recovers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path / "full.duckdb")],
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = orjson.loads(result.stdout.splitlines()[-1])
    assert report["full"]["errors"] > 0
    assert report["full"]["states"] == ["degraded"]
    assert report["full"]["gauge"] == [1.0]
    assert report["after"] == {"health": {"recording": "ok"}, "degraded": 0}
    # Every exchange offered is accounted for: written, failed, or dropped.
    offered = 430
    assert report["written"] + report["errors"] + report["dropped"] == offered
    assert b"Traceback" not in result.stderr
    lines = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith(b"{")]
    assert [e["event"] for e in lines].count("recording_degraded") == 1


async def test_serve_with_a_locked_database_serves_and_reports_degraded(
    tmp_path: Path, start_fake: StartFake
) -> None:
    """The issue's case: a locked file at start printed a traceback and the proxy never
    served. Now it serves at once, says why on /readyz and /metrics, and catches up."""
    primary = await start_fake()
    path = tmp_path / "shadowtap.duckdb"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCK_HOLDER, str(path), stdin=-1, stdout=-1
    )
    assert holder.stdout is not None and (await holder.stdout.readline()).strip() == b"locked"
    port, admin = free_port(), free_port()
    config = tmp_path / "shadowtap.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
        f'[primary]\nurl = "{primary.url}"\n[sampling]\nrate = 1.0\n'
        f'[storage]\npath = "{path}"\nflush_interval_ms = 50\n'
    )
    process = await asyncio.create_subprocess_exec(
        SHADOWTAP, "serve", "--config", str(config), stdout=-1, stderr=-1
    )
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(session, admin, timeout_s=60)
            async with session.get(f"http://127.0.0.1:{admin}/readyz") as ready:
                assert ready.status == 200
                body = await ready.json()
            assert body["recording"] == "degraded" and "lock" in body["reason"].lower()
            async with session.get(f"http://127.0.0.1:{admin}/metrics") as scrape:
                assert "shadowtap_recording_degraded 1.0" in await scrape.text()
            client = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-client", max_retries=0
            )
            for i in range(3):
                answer = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"q{i}"}]
                )
                assert "forty-two" in (answer.choices[0].message.content or "")
            await client.close()
            assert holder.stdin is not None
            holder.stdin.close()  # the other process lets go of the file
            assert await asyncio.wait_for(holder.wait(), 10) == 0
            for _ in range(100):
                async with session.get(f"http://127.0.0.1:{admin}/readyz") as ready:
                    if (await ready.json())["recording"] == "ok":
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("recording did not recover")
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
    assert process.returncode == 0
    log_events = [orjson.loads(line)["event"] for line in err.decode().splitlines()]
    assert log_events.count("recording_degraded") == 1
    assert log_events.count("recording_recovered") == 1
    assert b"Traceback" not in err
    assert len(stored_ids(path)) == 3  # queued while degraded, written once it recovered


def test_a_value_duckdb_refuses_is_a_data_error_not_a_storage_fault(tmp_path: Path) -> None:
    # A failed INSERT aborts the transaction; unregistering the batch's view inside it
    # raises a TransactionException that would hide the real error, so a refused value would
    # read as a storage failure (recording degraded, the whole batch lost).
    from shadowtap.recorder.privacy import Privacy
    from shadowtap.recorder.rows import to_columns
    from shadowtap.recorder.store import Store, is_storage_error

    store = Store.open(StorageConfig(path=str(tmp_path / "s.duckdb")))
    try:
        tables = to_columns([synthetic_exchange(0)], Privacy("redacted"))
        # Past what `to_columns` lets through (it makes such counts NULL): DuckDB refuses it.
        tables["responses"]["status"] = [2**40] * len(tables["responses"]["status"])
        with pytest.raises(duckdb.Error) as refused:
            store.insert(tables, ["r0"])
        assert not is_storage_error(refused.value), refused.value
        # The store is still usable, and the failed batch left nothing behind.
        good = synthetic_exchange(1)
        store.insert(to_columns([good], Privacy("redacted")), [good.request_id])
        rows = store.con.execute("SELECT request_id FROM exchanges").fetchall()
        assert rows == [(good.request_id,)]
    finally:
        store.close()
