"""`StoreKeeper`: the recorder's open database file, and whether recording is degraded.

Opening, reopening with backoff, declaring recording degraded or recovered, and noticing a
file deleted or replaced under the writer (see `shadowtap.recorder.writer` for what each
means to the proxy). `Recorder` is one; only its writer thread calls these, except
`_set_store`, which takes the lock `query()` reads under.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from shadowtap.config import StorageConfig
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.recorder.schema import DatabaseLocked
from shadowtap.recorder.store import Store, safe_error

log = get_logger("shadowtap.recorder")

RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0  # reopening a degraded store: backoff bounds
VANISHED = "the database file was deleted or replaced while open"


def _kind(reason: str) -> str:
    return reason.partition(":")[0]  # "cannot open <path>", "writing failed", VANISHED


class StoreKeeper:
    def __init__(
        self,
        config: StorageConfig,
        metrics: Metrics,
        *,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._retry_min_s, self._retry_max_s = retry_min_s, retry_max_s
        self._retry_s = retry_min_s
        self._next_open = 0.0
        self._store: Store | None = None
        self._degraded: str | None = None  # why, while recording is degraded
        self._failed_writing = False  # the last storage failure was a write, not an open
        self._read_lock = threading.Lock()

    def _reopen(self, store: Store) -> None:
        """Close and open the file again: DuckDB gives back the memory it kept for the old
        connection (see store.RECYCLE_BYTES). A failure on the way is storage trouble."""
        with contextlib.suppress(Exception):  # an invalidated database cannot checkpoint
            store.checkpoint()
        self._set_store(None)
        store.close()
        self._open()

    def _open(self) -> None:
        try:
            store = Store.open(self.config)
        except Exception as error:
            why = (
                "locked by another process"  # its own message speaks to readers, not to serve
                if isinstance(error, DatabaseLocked)
                else safe_error(error)
            )
            self._storage_failed(None, f"cannot open {self.config.path}: {why}")
            return
        self._set_store(store)
        # After a failed write, opening proves little (a full disk opens fine): recovered is
        # declared by the next write that succeeds.
        if not self._failed_writing:
            self._recovered()

    def _recovered(self) -> None:
        if self._degraded is not None:
            log.warning("recording_recovered", path=self.config.path)
            self._degraded = None
            self._metrics.set_recording_degraded(False)

    def _storage_failed(self, store: Store | None, reason: str, **details: Any) -> None:
        """Recording is degraded: drop the store, retry opening after the backoff."""
        if store is not None:
            if self._store is store:
                self._set_store(None)
            store.close()
        delay = self._retry_s
        self._next_open = time.monotonic() + delay
        self._retry_s = min(delay * 2, self._retry_max_s)
        # One line per state change, not per retry (nor per detail of the same failure).
        if self._degraded is None or _kind(reason) != _kind(self._degraded):
            log.error("recording_degraded", reason=reason, retry_in_s=delay, **details)
        self._degraded = reason
        self._metrics.set_recording_degraded(True)

    def _vanished(self, store: Store) -> None:
        """The file under the store was deleted or replaced: what it held that is in no
        Parquet file either is lost, and counted; then the store is dropped."""
        try:
            lost = store.salvage()
        except Exception:
            lost = store.written  # at least what this process wrote into it
        if lost:
            self._metrics.records_lost_inc(lost)
        self._storage_failed(store, VANISHED, lost=lost)

    def _check_file(self) -> None:
        store = self._store
        if store is not None and not store.intact():
            self._vanished(store)
            self._open()

    def _set_store(self, store: Store | None) -> None:
        with self._read_lock:  # never swapped under a running query
            self._store = store
