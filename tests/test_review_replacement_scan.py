"""Review of the batch's columns reaching DuckDB by a replacement scan of a local variable
(recorder/frames.py) and of the sample size the Store remembers: a table or view of the user's
named like that variable, two stores at once in one process, admin reads meanwhile, and the
sample size after a failed batch. Real DuckDB files in tmp_path, the real Store and Recorder."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, RecorderClosed, connect, open_readonly
from shadowtap.recorder.privacy import Privacy
from shadowtap.recorder.rows import to_columns
from shadowtap.recorder.store import Store

from tests.synthetic import synthetic_exchange


def stored_ids(path: Path) -> list[str]:
    con = open_readonly(path)
    try:
        return [row[0] for row in con.execute("SELECT request_id FROM exchanges").fetchall()]
    finally:
        con.close()


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE _shadowtap_batch (request_id VARCHAR, started_at TIMESTAMPTZ)",
        "CREATE VIEW _shadowtap_batch AS SELECT * FROM exchanges",
        "CREATE TABLE _SHADOWTAP_BATCH AS SELECT 1 AS x",
    ],
)
def test_a_users_table_named_like_the_batch_variable_is_not_what_is_inserted(
    tmp_path: Path, ddl: str
) -> None:
    # Users query (and may add to) the database: an object of theirs that happens to bear the
    # name the batch is read by must neither take the batch's place nor fail every batch.
    path = tmp_path / "user.duckdb"
    con = connect(path)
    con.execute(ddl)
    con.close()
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(StorageConfig(path=str(path)), metrics)
    batch = [synthetic_exchange(i) for i in range(5)]
    for exchange in batch:
        assert recorder.record(exchange)
    recorder.start()
    recorder.close(timeout_s=60)
    assert metrics.registry.get_sample_value("shadowtap_records_written_total") == len(batch)
    assert sorted(stored_ids(path)) == sorted(e.request_id for e in batch)


def sparse_batch(size: int, tag: str, *, bare: bool = False) -> list[Exchange]:
    """`size` exchanges whose only non-empty header list is the last one's (`bare`: with no
    answers and no scores, so the batch's last INSERT is the one with the list column)."""
    batch = [synthetic_exchange(i) for i in range(size)]
    for exchange in batch:
        exchange.request_id = f"{tag}-{exchange.request_id}"
        exchange.header_names = []
        if bare:
            exchange.results = {}
            exchange.scores = []
    batch[-1].header_names = ["X-Tenant"]
    return batch


def test_two_stores_of_one_file_in_one_process_each_analyze_their_batch_whole(
    tmp_path: Path,
) -> None:
    # pandas_analyze_sample is a setting of the whole database instance, which every
    # connection to one file in a process shares: a store that remembers what it set last
    # must not trust it after another connection set it otherwise.
    config = StorageConfig(path=str(tmp_path / "shared.duckdb"))
    first = Store.open(config)
    second = Store.open(config)
    privacy = Privacy(config.bodies)
    try:
        for round_, (store, size) in enumerate(
            [(first, 2_500), (second, 10), (first, 2_500), (second, 1_500), (first, 2_500)]
        ):
            batch = sparse_batch(size, f"r{round_}", bare=True)
            store.insert(to_columns(batch, privacy), [e.request_id for e in batch])
        total = first.con.execute("SELECT count(*) FROM exchanges").fetchone()
    finally:
        second.close()
        first.close()
    assert total == (2_500 * 3 + 10 + 1_500,)


def test_a_batch_after_a_failed_one_is_analyzed_at_its_own_size(tmp_path: Path) -> None:
    config = StorageConfig(path=str(tmp_path / "failed.duckdb"))
    store = Store.open(config)
    privacy = Privacy(config.bodies)
    try:
        good = sparse_batch(2_500, "a")
        store.insert(to_columns(good, privacy), [e.request_id for e in good])
        bad = sparse_batch(2_500, "b")
        columns = to_columns(bad, privacy)
        columns["responses"]["tool_calls"][0] = "{not JSON"  # fails in the second table's INSERT
        with pytest.raises(duckdb.Error):
            store.insert(columns, [e.request_id for e in bad])
        again = sparse_batch(2_500, "c")
        store.insert(to_columns(again, privacy), [e.request_id for e in again])
        short = sparse_batch(10, "d")
        store.insert(to_columns(short, privacy), [e.request_id for e in short])
        rows = store.con.execute(
            "SELECT left(request_id, 1), count(*) FROM exchanges GROUP BY 1 ORDER BY 1"
        ).fetchall()
    finally:
        store.close()
    assert rows == [("a", 2_500), ("c", 2_500), ("d", 10)]


def test_two_recorders_and_live_reads_at_once_each_store_their_own_rows(tmp_path: Path) -> None:
    # Each writer thread's batch is found in its own frame, never the other's, while the
    # stores' reader cursors run queries of their own meanwhile.
    recorders, expected = [], []
    for name in ("one", "two"):
        config = StorageConfig(path=str(tmp_path / f"{name}.duckdb"), batch_size=50)
        recorder = Recorder(config, Metrics(CollectorRegistry()))
        batch = sparse_batch(1_200, name)
        recorders.append((config, recorder, batch))
        expected.append(sorted(e.request_id for e in batch))
    stop = threading.Event()
    errors: list[BaseException] = []

    def read_live(recorder: Recorder) -> None:
        while not stop.is_set():
            try:  # the admin API's live view, as it reads
                recorder.query("SELECT count(*) AS n FROM exchanges WHERE len(header_names) > 0")
            except RecorderClosed:
                pass  # not open yet, or closed meanwhile
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

    readers = [threading.Thread(target=read_live, args=(r,)) for _, r, _ in recorders]
    for _, recorder, _ in recorders:
        recorder.start()
    for thread in readers:
        thread.start()
    try:
        for _, recorder, batch in recorders:
            for exchange in batch:
                while not recorder.record(exchange):
                    pass
        for _, recorder, _ in recorders:
            recorder.close(timeout_s=60)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert errors == []
    for (config, _, _), ids in zip(recorders, expected, strict=True):
        assert sorted(stored_ids(Path(config.path))) == ids
