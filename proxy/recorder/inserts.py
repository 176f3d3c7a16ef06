"""`BatchInserter`: one batch of exchanges into the open store, or counted as failed.

A batch is turned into columns and its texts are cut to `storage.max_text_bytes` before any
storage is touched, so a failure there is the data's. A failed insert is then sorted out:
committed anyway (DuckDB invalidated the database after the commit: reopen, nothing lost),
the storage's fault (recording turns degraded, the batch is counted in
`shadowtap_record_write_errors_total`) or the data's (the batch is retried one exchange at a
time, so one bad exchange costs only itself). `Recorder` (writer.py) is one; only its writer
thread calls these.
"""

from __future__ import annotations

import threading

from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.recorder import frames
from shadowtap.recorder.caps import TextCap, cap_batch
from shadowtap.recorder.keeper import RETRY_MAX_S, RETRY_MIN_S, StoreKeeper
from shadowtap.recorder.privacy import Privacy
from shadowtap.recorder.rows import Batch, to_columns
from shadowtap.recorder.store import (
    Store,
    committed_anyway,
    is_fatal,
    is_storage_error,
    safe_error,
)

log = get_logger("shadowtap.recorder")


class Abandoned(Exception):
    """close() gave up on the writer: stop at once, write nothing more."""


class BatchInserter(StoreKeeper):
    def __init__(
        self,
        config: StorageConfig,
        metrics: Metrics,
        *,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        super().__init__(config, metrics, retry_min_s=retry_min_s, retry_max_s=retry_max_s)
        self._privacy = Privacy(config.bodies)
        self._abandoned = threading.Event()  # set by a close() that ran out of time

    def _insert(self, store: Store, batch: list[Exchange]) -> None:
        try:
            cap = TextCap(self.config.max_text_bytes)  # request bodies cut as they are made
            tables = to_columns(batch, self._privacy, cap)
            for field, count in (cap.cut + cap_batch(tables, cap.limit)).items():
                self._metrics.record_text_truncated_inc(field, count)
        except Exception as error:  # before any storage is touched: the data's fault
            self._bad_data(store, batch, error)
            return
        if self._abandoned.is_set():
            raise Abandoned
        try:
            store.insert(tables, [e.request_id for e in batch])
        except Exception as error:
            if self._abandoned.is_set():  # interrupted by close(): nothing was committed
                raise Abandoned from error
            if committed_anyway(error):
                # Written (durable in the WAL), but DuckDB invalidated the database: reopen
                # now; the next open replays the WAL into the file.
                self._written(store, batch, tables)
                log.warning("recorder_reopened", reason=safe_error(error))
                self._reopen(store)
                return
            if not is_storage_error(error):
                self._bad_data(store, batch, error)
                return
            self._metrics.record_write_error(len(batch))
            self._failed_writing = True
            why = "database invalidated" if is_fatal(error) else "writing failed"
            self._storage_failed(store, f"{why}: {safe_error(error)}")
            return
        self._written(store, batch, tables)

    def _written(self, store: Store, batch: list[Exchange], tables: Batch) -> None:
        store.written += len(batch)
        # What DuckDB was given, caps applied: what it keeps for the connection.
        store.bytes_written += frames.size(tables)
        self._metrics.records_written_inc(len(batch))
        self._retry_s = self._retry_min_s  # writing works again: a new failure starts over
        self._failed_writing = False
        self._recovered()

    def _bad_data(self, store: Store, batch: list[Exchange], error: Exception) -> None:
        if len(batch) == 1:
            self._metrics.record_write_error()
            log.error("record_write_failed", error=safe_error(error))
            return
        # One bad exchange must not cost the whole batch: write them one by one.
        log.warning("record_batch_failed", size=len(batch), error=safe_error(error))
        for i, exchange in enumerate(batch):
            if self._abandoned.is_set():
                raise Abandoned
            current = self._store  # a new one after a reopen on the way
            if current is None:  # the storage failed on the way
                self._metrics.record_write_error(len(batch) - i)
                return
            self._insert(current, [exchange])
