"""The writer hands DuckDB columns of Python values as NumPy object arrays (`frames`): no
pyarrow in the serving process, and every value stored as it was, whatever DuckDB infers
from a column's values. Real DuckDB files, real writer thread."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly
from shadowtap.recorder.privacy import Privacy
from shadowtap.recorder.rows import to_columns
from shadowtap.recorder.store import Store

from tests.synthetic import synthetic_exchange

ROOT = Path(__file__).resolve().parent.parent

# Serving with recording on, in a fresh interpreter: start-up imports, a Recorder started,
# a batch written (with the rare values that take the writer's slow paths) and rolled to
# Parquet at close; then what it imported.
SERVE_AND_RECORD = """
import json, math, sys
import shadowtap.server
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly
from shadowtap.recorder.privacy import Privacy
from shadowtap.recorder.rows import to_columns
from shadowtap.recorder.store import Store
from tests.synthetic import synthetic_exchange

db, parquet = sys.argv[1], sys.argv[2]
metrics = Metrics(CollectorRegistry())
recorder = Recorder(StorageConfig(path=db, parquet_dir=parquet), metrics)
recorder.start()
odd = synthetic_exchange(1)
odd.results["small"].completion.text = "half a pair \\ud83d here"
odd.results["small"].completion.latency_s = math.nan
odd.results["small"].completion.prompt_tokens = 2**40
for exchange in (synthetic_exchange(0), odd):
    assert recorder.record(exchange)
recorder.close()
con = open_readonly(db)
rows = con.execute("SELECT count(*) FROM responses").fetchone()[0]
print(json.dumps({"rows": rows, "loaded": sorted(m for m in ("pyarrow", "pandas", "polars")
                                                 if m in sys.modules)}))
"""


def test_serving_and_recording_never_import_pyarrow(tmp_path: Path) -> None:
    parquet = tmp_path / "parquet"
    done = subprocess.run(
        [sys.executable, "-c", SERVE_AND_RECORD, str(tmp_path / "s.duckdb"), str(parquet)],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=True,
    )
    found = json.loads(done.stdout.decode().splitlines()[-1])
    assert found == {"rows": 6, "loaded": []}
    assert list(parquet.glob("responses/date=*/*.parquet"))  # the roll ran too


def record(tmp_path: Path, exchanges: list[Exchange]) -> Metrics:
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(StorageConfig(path=str(tmp_path / "f.duckdb"), batch_size=5000), metrics)
    for exchange in exchanges:
        assert recorder.record(exchange)
    recorder.start()  # all of them in one batch
    recorder.close()
    sample = metrics.registry.get_sample_value
    assert sample("shadowtap_record_write_errors_total") == 0
    assert sample("shadowtap_records_written_total") == len(exchanges)
    return metrics


def test_a_value_only_the_last_row_of_a_long_batch_has_is_stored_as_it_is(
    tmp_path: Path,
) -> None:
    # DuckDB infers an object column's type from its values; a batch far longer than its
    # sample (1,000 rows) with one non-NULL value at the very end must still store it.
    exchanges = [synthetic_exchange(i) for i in range(2_500)]
    for exchange in exchanges:
        small = exchange.results["small"]
        small.cost_usd = small.completion.ttft_s = small.completion.status = None
        small.completion.error = small.completion.response_model = None
        exchange.header_names = []
        exchange.stream = None
    last = exchanges[-1]
    small = last.results["small"]
    small.cost_usd, small.completion.ttft_s, small.completion.status = 0.1 + 0.2, 0.25, 503
    small.completion.error, small.completion.response_model = "overloaded", "m-1"
    last.header_names = ["Content-Type", "X-Tenant"]
    last.stream = True
    record(tmp_path, exchanges)
    con = open_readonly(tmp_path / "f.duckdb")
    try:
        stored = con.execute(
            "SELECT e.request_id, e.header_names, e.stream, r.cost_usd, r.ttft_ms, r.status,"
            " r.error, r.response_model FROM exchanges e "
            "JOIN responses r ON r.request_id = e.request_id AND r.target = 'small' "
            "WHERE r.cost_usd IS NOT NULL OR e.stream IS NOT NULL OR len(e.header_names) > 0"
            " OR r.ttft_ms IS NOT NULL OR r.status IS NOT NULL OR r.error IS NOT NULL"
            " OR r.response_model IS NOT NULL"
        ).fetchall()
    finally:
        con.close()
    header_names = ["content-type", "x-tenant"]
    answer = (0.1 + 0.2, 250.0, 503, "overloaded", "m-1")
    assert stored == [(last.request_id, header_names, True, *answer)]


def test_a_nan_is_stored_as_nan_and_its_neighbours_exactly(tmp_path: Path) -> None:
    # DuckDB reads a NaN in a NumPy array as NULL; a column holding one goes as text, which
    # must neither turn it into NULL nor round any other value of the column.
    exchanges = [synthetic_exchange(i) for i in range(3)]
    exchanges[0].scores[0].score = math.nan
    exchanges[1].scores[0].score = 0.1 + 0.2
    exchanges[2].scores[0].score = 5e-324
    exchanges[0].results["small"].cost_usd = math.nan
    exchanges[1].results["small"].cost_usd = -math.inf
    exchanges[2].results["small"].cost_usd = 1e308
    record(tmp_path, exchanges)
    con = open_readonly(tmp_path / "f.duckdb")
    try:
        scores = dict(
            con.execute(
                "SELECT request_id, score FROM scores WHERE target = ? AND scorer = ?",
                [exchanges[0].scores[0].target, exchanges[0].scores[0].scorer],
            ).fetchall()
        )
        costs = dict(
            con.execute(
                "SELECT request_id, cost_usd FROM responses WHERE target = 'small'"
            ).fetchall()
        )
    finally:
        con.close()
    first, second, third = (e.request_id for e in exchanges)
    assert math.isnan(scores[first]) and math.isnan(costs[first])
    assert scores[second] == 0.1 + 0.2 and scores[third] == 5e-324
    assert costs[second] == -math.inf and costs[third] == 1e308


def test_batches_of_every_size_in_turn_each_have_their_list_column_analyzed_whole(
    tmp_path: Path,
) -> None:
    # The writer sets DuckDB's sample size only when a batch needs another one than the last
    # batch did: a long batch after a short one, and a short one after a long one, must each
    # be analyzed at their own size (a list column sampled empty fails the whole INSERT).
    config = StorageConfig(path=str(tmp_path / "f.duckdb"))
    store = Store.open(config)
    privacy = Privacy(config.bodies)
    written: list[str] = []
    try:
        for size in (10, 2_500, 10, 1_200, 2_500):
            batch = [synthetic_exchange(i) for i in range(size)]
            for exchange in batch:
                exchange.header_names = []
            batch[-1].header_names = ["X-Tenant"]
            store.insert(to_columns(batch, privacy), [e.request_id for e in batch])
            written.append(batch[-1].request_id)
        stored = store.con.execute(
            "SELECT request_id FROM exchanges WHERE len(header_names) > 0 ORDER BY request_id"
        ).fetchall()
        total = store.con.execute("SELECT count(*) FROM exchanges").fetchone()
    finally:
        store.close()
    assert [row[0] for row in stored] == sorted(written)
    assert total == (10 + 2_500 + 10 + 1_200 + 2_500,)
