"""`Recorder`: the bounded queue and the single thread that writes exchanges to DuckDB.

The proxy calls `record()` on the event loop; it only does `put_nowait`, so a slow disk can
never delay a response: when the queue is full the exchange is dropped and counted
(`shadowtap_records_dropped_total`). One writer thread owns the connection (DuckDB allows one
writing process) and inserts a batch when `batch_size` exchanges are waiting or
`flush_interval_ms` after the first of them arrived, whichever comes first, in one
transaction through Arrow. A commit is durable in DuckDB's WAL, so `kill -9` loses at most
what was still queued: about one flush interval.

Example:

    recorder = Recorder(config.storage, metrics)
    recorder.start()
    recorder.record(exchange)          # False when dropped
    recorder.query("SELECT count(*) AS n FROM pairs")
    recorder.close()                   # flushes everything queued, checkpoints
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.recorder import parquet
from shadowtap.recorder.rows import Privacy, to_arrow
from shadowtap.recorder.schema import COLUMNS, connect
from shadowtap.redact import redact

log = get_logger("shadowtap.recorder")

ROLL_INTERVAL_S = 300.0  # how often completed data is rolled to Parquet (and at close)
RETENTION_INTERVAL_S = 3600.0  # how often old rows are deleted (and at start)
DRAIN_POLL_S = 0.02  # how often a gathering writer looks at the queue
IDLE_POLL_S = 0.2  # how soon an idle writer notices close()
# DuckDB checkpoints (compresses the WAL into the file) whenever the WAL passes this size. At
# its 16 MB default it checkpoints every few batches and rewrites the same half-full row group
# each time; at 64 MB the writer sustains ~1.5x the rows per CPU second, checkpoint included,
# and the file comes out smaller. The cost: a WAL of up to 64 MB to replay after `kill -9`.
CHECKPOINT_THRESHOLD = "64MB"


class RecorderClosed(RuntimeError):
    """`query()` after `close()`."""


def safe_error(error: BaseException) -> str:
    """An exception as a log-safe string: DuckDB conversion errors quote the offending input,
    which may be a prompt or a key, so the quoted part is cut and the rest scrubbed."""
    message = re.sub(r"(?s)\bInput:.*", "Input: [dropped]", str(error))
    return f"{type(error).__name__}: {redact(message, pii=True)[:300]}"


class Recorder:
    def __init__(
        self,
        config: StorageConfig,
        metrics: Metrics,
        *,
        roll_interval_s: float = ROLL_INTERVAL_S,
        retention_interval_s: float = RETENTION_INTERVAL_S,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._privacy = Privacy(config.bodies)
        self._queue: queue.Queue[Exchange] = queue.Queue(maxsize=config.queue_max)
        self._flush_s = config.flush_interval_ms / 1000.0
        self._roll_interval_s = roll_interval_s
        self._retention_interval_s = retention_interval_s
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._read_lock = threading.Lock()
        metrics.track_queue_depth(self._queue.qsize)

    # -- the proxy's side -------------------------------------------------------------------
    def start(self) -> None:
        """Open the file, apply migrations, start the writer thread. Raises if the file cannot
        be opened, so a bad `storage.path` stops the start instead of losing data later."""
        if self._thread is not None:
            raise RuntimeError("Recorder.start() called twice")
        Path(self.config.path).parent.mkdir(parents=True, exist_ok=True)
        con = connect(self.config.path)
        # Partition dates and API timestamps are UTC whatever the host's zone is.
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        # Always there (empty without parquet_dir), so retention can clean it either way.
        con.execute(parquet.PENDING_DDL)
        self._con = con
        # A second cursor reads through MVCC, so admin API reads never wait for a batch.
        self._reader = con.cursor()
        self._thread = threading.Thread(target=self._run, name="shadowtap-recorder", daemon=True)
        self._thread.start()

    def record(self, exchange: Exchange) -> bool:
        """Queue the exchange without waiting; False (and counted) when it was dropped."""
        try:
            if self._closing.is_set():
                raise queue.Full
            self._queue.put_nowait(exchange)
            return True
        except queue.Full:
            self._metrics.record_dropped()
            return False
        except Exception:  # never raise into the proxy
            self._metrics.record_dropped()
            return False

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, roll Parquet, checkpoint and close. Blocking."""
        self._closing.set()
        thread = self._thread
        if thread is None:
            self._drop_queued("not_started")
            return
        thread.join(timeout_s)
        if thread.is_alive():
            # The writer is stuck (e.g. a hung disk): what is still queued will not be written
            # before exit, so count it now rather than lose it silently.
            self._drop_queued("close_timeout")
        else:
            # A record() that raced close() may have landed after the writer's last look.
            self._drop_queued("after_close")
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def health(self) -> dict[str, str]:
        """Recording's state for `/readyz`: {"recording": "ok"} while the writer runs."""
        thread = self._thread
        if thread is not None and thread.is_alive() and not self._closing.is_set():
            return {"recording": "ok"}
        return {"recording": "stopped"}

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> list[dict]:
        """Run a read on the writer's database (the admin API's live view)."""
        with self._read_lock:
            if self._reader is None:
                raise RecorderClosed("the recorder is not running")
            cursor = self._reader.execute(sql, params or [])
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        assert self._con is not None
        next_retention = time.monotonic()  # also once at start
        next_roll = time.monotonic() + self._roll_interval_s
        try:
            while True:
                batch = self._collect()
                if batch:
                    self._write(batch)
                elif self._closing.is_set():
                    break
                now = time.monotonic()
                if self.config.retention_days is not None and now >= next_retention:
                    next_retention = now + self._retention_interval_s
                    self._guarded("retention", self._retention)
                if self.config.parquet_dir is not None and now >= next_roll:
                    next_roll = now + self._roll_interval_s
                    self._guarded("parquet_roll", self._roll)
            if self.config.parquet_dir is not None:
                self._guarded("parquet_roll", self._roll)
            # Fold the WAL into the file so the next open does not replay it.
            self._guarded("checkpoint", lambda: self._con.execute("CHECKPOINT"))  # type: ignore[union-attr]
        finally:
            with self._read_lock:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
            self._con.close()
            self._con = None

    def _collect(self) -> list[Exchange]:
        """Wait for a first exchange, then gather until `batch_size` or one flush interval.

        Gathering sleeps and drains in bulk instead of blocking on the queue per item: every
        blocking get() is a wake-up on each put_nowait() and a GIL hand-off from the event
        loop, thousands a second under load, which cost the proxy a quarter of its throughput.
        """
        q = self._queue
        try:
            first = q.get(timeout=min(self._flush_s, IDLE_POLL_S))
        except queue.Empty:
            return []
        deadline = time.monotonic() + self._flush_s
        limit = self.config.batch_size
        while q.qsize() + 1 < limit and not self._closing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._closing.wait(min(remaining, DRAIN_POLL_S))  # close() cuts the wait short
        batch = [first]
        while len(batch) < limit:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[Exchange]) -> None:
        try:
            self._insert(to_arrow(batch, self._privacy), [e.request_id for e in batch])
        except Exception as error:
            if len(batch) > 1:
                # One bad exchange must not cost the whole batch: write them one by one.
                log.warning("record_batch_failed", size=len(batch), error=safe_error(error))
                for exchange in batch:
                    self._write([exchange])
                return
            self._metrics.record_write_error()
            log.error("record_write_failed", error=safe_error(error))
            return
        self._metrics.records_written_inc(len(batch))

    def _insert(self, tables: dict[str, pa.Table], request_ids: list[str]) -> None:
        con = self._con
        assert con is not None
        con.execute("BEGIN TRANSACTION")
        try:
            for table, arrow in tables.items():
                if arrow.num_rows == 0:
                    continue
                name = f"_batch_{table}"
                con.register(name, arrow)
                try:
                    cols = ", ".join(COLUMNS[table])
                    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name}")
                finally:
                    con.unregister(name)
            if self.config.parquet_dir is not None:
                ids = pa.table({"request_id": pa.array(request_ids, pa.string())})
                con.register("_batch_ids", ids)
                try:
                    pending = parquet.PENDING_TABLE
                    con.execute(f"INSERT INTO {pending} SELECT request_id, NULL FROM _batch_ids")
                finally:
                    con.unregister("_batch_ids")
            con.execute("COMMIT")
        except BaseException:
            # The failed statement may already have ended the transaction.
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    def _roll(self) -> None:
        assert self._con is not None and self.config.parquet_dir is not None
        rolled = parquet.roll(self._con, self.config.parquet_dir)
        if rolled:
            log.info("parquet_rolled", exchanges=rolled)

    def _retention(self) -> None:
        assert self._con is not None and self.config.retention_days is not None
        deleted = parquet.apply_retention(
            self._con, self.config.retention_days, self.config.parquet_dir
        )
        if deleted:
            log.info("retention_applied", exchanges_deleted=deleted)

    def _guarded(self, what: str, action: Any) -> None:
        # Housekeeping failures are logged and counted; the writer keeps writing.
        try:
            action()
        except Exception as error:
            self._metrics.record_write_error()
            log.error("recorder_task_failed", task=what, error=safe_error(error))

    def _drop_queued(self, reason: str) -> None:
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._metrics.record_dropped()
            dropped += 1
        if dropped:
            log.error("records_dropped_at_close", count=dropped, reason=reason)
