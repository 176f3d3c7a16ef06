"""The recorder gives every exchange's held bytes back to the proxy's memory budget exactly once,
when it is done with it: after its batch is written or failed, when it is dropped, at close."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder

from tests.synthetic import synthetic_exchange


class Budget:
    """What the proxy's budget sees: bytes given back, per exchange, and what was stored by
    then (read through the recorder's own admin query)."""

    def __init__(self) -> None:
        self.released: Counter[str] = Counter()
        self.bytes = 0
        self.stored_at_release: dict[str, bool] = {}
        self.recorder: Recorder | None = None
        self._lock = threading.Lock()

    def hold(self, exchange: Exchange, size: int = 1000) -> Exchange:
        exchange.held_bytes = size

        def give_back(held: int) -> None:
            stored = self._stored(exchange.request_id)
            with self._lock:
                self.released[exchange.request_id] += 1
                self.bytes += held
                self.stored_at_release[exchange.request_id] = stored

        exchange.on_release = give_back
        return exchange

    def _stored(self, request_id: str) -> bool:
        try:
            assert self.recorder is not None
            rows = self.recorder.query(
                "SELECT count(*) AS n FROM exchanges WHERE request_id = ?", [request_id]
            )
        except Exception:
            return False
        return rows == [{"n": 1}]


def make(path: Path, **storage: Any) -> tuple[Recorder, Metrics, Budget]:
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(path), flush_interval_ms=20, **storage)
    recorder = Recorder(config, metrics, retry_min_s=0.05, retry_max_s=0.2)
    budget = Budget()
    budget.recorder = recorder
    return recorder, metrics, budget


def written(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("shadowtap_records_written_total") or 0.0


def test_written_exchanges_are_released_once_after_their_batch_is_stored(tmp_path: Path) -> None:
    recorder, metrics, budget = make(tmp_path / "r.duckdb", batch_size=7)
    recorder.start()
    exchanges = [budget.hold(synthetic_exchange(i)) for i in range(30)]
    bad = exchanges[3]
    bad.started_at = "not a moment"  # type: ignore[assignment]  # fails its write
    for exchange in exchanges:
        assert recorder.record(exchange)
    deadline = time.monotonic() + 10
    while sum(budget.released.values()) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    recorder.close()
    assert budget.released == Counter({e.request_id: 1 for e in exchanges})
    assert budget.bytes == 30 * 1000
    good = [e.request_id for e in exchanges if e is not bad]
    assert all(budget.stored_at_release[i] for i in good)  # released only once stored
    assert budget.stored_at_release[bad.request_id] is False  # failed, released all the same
    assert written(metrics) == 29


def test_dropped_exchanges_are_released_at_once(tmp_path: Path) -> None:
    recorder, metrics, budget = make(tmp_path / "r.duckdb", queue_max=2)
    exchanges = [budget.hold(synthetic_exchange(i)) for i in range(5)]
    # Not started: nothing drains the queue, so the last three are over the bound.
    accepted = [recorder.record(e) for e in exchanges]
    assert accepted == [True, True, False, False, False]
    assert set(budget.released) == {e.request_id for e in exchanges[2:]}
    recorder.start()
    recorder.close()
    after = budget.hold(synthetic_exchange(9))
    assert recorder.record(after) is False  # closed: dropped, and released
    assert budget.released == Counter({e.request_id: 1 for e in [*exchanges, after]})
    assert written(metrics) == 2


def test_exchanges_queued_while_degraded_are_released_at_close(tmp_path: Path) -> None:
    path = tmp_path / "r.duckdb"
    path.mkdir()  # storage never opens
    recorder, metrics, budget = make(path)
    recorder.start()
    exchanges = [budget.hold(synthetic_exchange(i)) for i in range(4)]
    for exchange in exchanges:
        assert recorder.record(exchange)
    assert not budget.released  # still held: storage may come back
    recorder.close()
    assert budget.released == Counter({e.request_id: 1 for e in exchanges})
    assert metrics.registry.get_sample_value("shadowtap_records_dropped_total") == 4
