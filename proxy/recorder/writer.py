"""`Recorder`: the bounded queue and the single thread that writes exchanges to DuckDB.

The proxy calls `record()` on the event loop; it only does `put_nowait`, so a slow disk can
never delay a response: when the queue is full the exchange is dropped and counted
(`shadowtap_records_dropped_total`). One writer thread owns the connection (DuckDB allows one
writing process) and inserts a batch when `batch_size` exchanges are waiting or
`flush_interval_ms` after the first of them arrived, whichever comes first, in one
transaction (columns of Python values that DuckDB scans as NumPy arrays, see `frames`). A
commit is durable in DuckDB's WAL, so `kill -9` loses at most what was still queued: about
one flush interval.

Storage trouble never stops serving (DESIGN principle 5). A file that cannot be opened at
start (locked by another process, a folder where the file should be, a read-only volume), a
write that fails for the storage's sake (full disk, I/O error) or a file deleted or replaced
under the writer turns recording *degraded*: one log line, `shadowtap_recording_degraded` at
1, `health()` says why, and the writer reopens with backoff. Meanwhile exchanges queue up to
`queue_max`, then are dropped and counted; a batch the storage failed is counted in
`shadowtap_record_write_errors_total`; exchanges that vanished with a deleted file (and could
not be rolled to Parquet from it first) in `shadowtap_records_lost_total`.

Example:

    recorder = Recorder(config.storage, metrics)
    recorder.start()                   # never raises for storage trouble
    recorder.record(exchange)          # False when dropped
    recorder.health()                  # {"recording": "ok"} or "degraded" with a "reason"
    recorder.query("SELECT count(*) AS n FROM pairs")
    recorder.close()                   # flushes everything queued, checkpoints

Closing is bounded: after `storage.close_timeout_s` the writer is abandoned. Its DuckDB
statement is interrupted (`connection.interrupt()`), what it held and what is still queued is
counted as dropped, and the file is closed without a checkpoint (the WAL keeps every commit;
the next start replays it). The thread must leave DuckDB before the interpreter finalizes: a
thread that DuckDB's code is running in when Python tears it down aborts the process
("terminate called after throwing", exit 134). A recorder nobody closed is closed at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import time
from typing import Any

from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.recorder.batches import gather
from shadowtap.recorder.inserts import Abandoned, BatchInserter
from shadowtap.recorder.keeper import RETRY_MAX_S, RETRY_MIN_S
from shadowtap.recorder.store import safe_error

log = get_logger("shadowtap.recorder")

ROLL_INTERVAL_S = 300.0  # how often completed data is rolled to Parquet (and at close)
RETENTION_INTERVAL_S = 3600.0  # how often old rows are deleted (and at start)
CHECK_INTERVAL_S = 1.0  # how often an idle writer checks its file is still there
IDLE_POLL_S = 0.2  # how soon an idle writer notices close()
# Once close_timeout_s has passed: how long close() keeps interrupting DuckDB for the writer to
# unwind (an interrupted statement returns within milliseconds), and how often it interrupts.
UNWIND_S = 1.0
INTERRUPT_EVERY_S = 0.02
EXIT_WAIT_S = 30.0  # at exit, for a writer close() left inside DuckDB (see close())


class RecorderClosed(RuntimeError):
    """`query()` while there is no database to read: after `close()`, or while degraded."""


class Recorder(BatchInserter):
    def __init__(
        self,
        config: StorageConfig,
        metrics: Metrics,
        *,
        roll_interval_s: float = ROLL_INTERVAL_S,
        retention_interval_s: float = RETENTION_INTERVAL_S,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        super().__init__(config, metrics, retry_min_s=retry_min_s, retry_max_s=retry_max_s)
        self._queue: queue.Queue[Exchange] = queue.Queue(maxsize=config.queue_max)
        self._flush_s = config.flush_interval_ms / 1000.0
        self._roll_interval_s = roll_interval_s
        self._retention_interval_s = retention_interval_s
        self._closing = threading.Event()
        self._hand_lock = threading.Lock()  # the writer and a late close() both settle _hand
        self._thread: threading.Thread | None = None
        self._hand: list[Exchange] = []  # taken off the queue, not yet written or counted
        metrics.track_queue_depth(self._queue.qsize)

    # -- the proxy's side -------------------------------------------------------------------
    def start(self) -> None:
        """Open the file, apply migrations, start the writer thread. Storage trouble does not
        raise: recording starts degraded and the writer keeps trying to open the file."""
        if self._thread is not None:
            raise RuntimeError("Recorder.start() called twice")
        self._open()
        self._thread = threading.Thread(target=self._run, name="shadowtap-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # never let the interpreter finalize under the writer

    def record(self, exchange: Exchange) -> bool:
        """Queue the exchange without waiting; False (counted, released) when it was dropped."""
        try:
            if self._closing.is_set():
                raise queue.Full
            self._queue.put_nowait(exchange)
            return True
        except Exception:  # queue.Full, or anything else: never raise into the proxy
            self._metrics.record_dropped()
            exchange.release()
            return False

    def close(self, timeout_s: float | None = None) -> None:
        """Write everything queued, roll Parquet, checkpoint and close. Blocking, at most
        `timeout_s` (default `storage.close_timeout_s`) plus UNWIND_S: then the writer is
        interrupted and what it had not written is counted as dropped (see the module doc)."""
        self._closing.set()
        thread = self._thread
        if thread is None:
            self._drop_queued("not_started")
            return
        atexit.unregister(self.close)
        thread.join(self.config.close_timeout_s if timeout_s is None else timeout_s)
        if not thread.is_alive():
            # A record() that raced close() may have landed after the writer's last look.
            self._drop_queued("after_close")
            return
        self._abandoned.set()
        if not self._unwind(thread, UNWIND_S):
            # Still inside DuckDB (a checkpoint notices an interrupt only between row groups,
            # seconds apart; a hung disk never): what it holds, and what is still queued, will
            # not be confirmed, so count them now rather than lose them silently (a batch that
            # still lands is counted twice: the safe side). close() returns within its bound;
            # the process, at exit, waits a while longer rather than abort under DuckDB.
            log.error("recorder_writer_stuck", waited_s=UNWIND_S)
            self._settle_hand()
            atexit.register(self._unwind, thread, EXIT_WAIT_S)
        self._drop_queued("close_timeout")

    def _unwind(self, thread: threading.Thread, wait_s: float) -> bool:
        """Interrupt the abandoned writer's statements until its thread ends (True) or
        `wait_s` passes (False)."""
        deadline = time.monotonic() + wait_s
        while thread.is_alive() and time.monotonic() < deadline:
            self._interrupt()
            thread.join(INTERRUPT_EVERY_S)
        return not thread.is_alive()

    def _interrupt(self) -> None:
        store = self._store
        if store is not None:
            with contextlib.suppress(Exception):  # closed meanwhile: nothing left to stop
                store.con.interrupt()

    def health(self) -> dict[str, str]:
        """Recording's state for `/readyz`: {"recording": "ok"} while the writer writes,
        {"recording": "degraded", "reason": ...} while storage is failing, else "stopped"."""
        thread = self._thread
        if thread is None or not thread.is_alive() or self._closing.is_set():
            return {"recording": "stopped"}
        reason = self._degraded
        if reason is not None:
            return {"recording": "degraded", "reason": reason}
        return {"recording": "ok"}

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> list[dict]:
        """Run a read on the writer's database (the admin API's live view); RecorderClosed
        while there is none (closed, or degraded: the message says why)."""
        with self._read_lock:
            store = self._store
            if store is None:
                reason = self._degraded
                raise RecorderClosed(
                    f"recording is degraded: {reason}" if reason else "the recorder is not running"
                )
            cursor = store.reader.execute(sql, params or [])
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        now = time.monotonic()
        next_retention = now  # also once at start (at the first open, when degraded)
        next_roll = now + self._roll_interval_s
        next_check = now + CHECK_INTERVAL_S
        last_try = False
        while not self._abandoned.is_set():
            try:
                if self._store is None:
                    # Degraded: wait for the next attempt; at close, one last one, so that
                    # what is queued is written if the storage is back.
                    if self._closing.is_set():
                        if last_try:
                            break
                        last_try = True
                        self._open()
                    elif time.monotonic() >= self._next_open:
                        self._open()
                    if self._store is None:
                        self._closing.wait(IDLE_POLL_S)
                        continue
                batch = self._hand
                gather(
                    self._queue,
                    batch,
                    first_wait_s=min(self._flush_s, IDLE_POLL_S),
                    flush_s=self._flush_s,
                    limit=self.config.batch_size,
                    max_bytes=self.config.batch_max_bytes,
                    closing=self._closing,
                )
                if batch:
                    try:
                        self._write(batch)
                    except Abandoned:
                        self._settle_hand()  # interrupted: none of the batch was committed
                        raise
                    finally:
                        with self._hand_lock:
                            self._hand = []
                elif self._closing.is_set():
                    break
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + CHECK_INTERVAL_S
                    self._check_file()
                if self._store is None:
                    continue
                if self.config.retention_days is not None and now >= next_retention:
                    next_retention = now + self._retention_interval_s
                    self._guarded("retention", self._retention)
                if self.config.parquet_dir is not None and now >= next_roll:
                    next_roll = now + self._roll_interval_s
                    self._guarded("parquet_roll", self._roll)
            except Abandoned:
                break
            except Exception as error:  # a bug here must not end recording silently
                self._metrics.record_write_error()
                log.error("recorder_loop_failed", error=safe_error(error))
                self._closing.wait(IDLE_POLL_S)
        self._finish()

    def _finish(self) -> None:
        store = self._store
        if self._abandoned.is_set():
            self._settle_hand()
            if store is not None:
                self._set_store(None)
                store.close(checkpoint=False)  # the WAL holds every commit: replayed at start
            self._drop_queued("close_timeout")
            return
        if store is not None:
            if not store.intact():
                self._vanished(store)
            else:
                if self.config.parquet_dir is not None:
                    self._guarded("parquet_roll", self._roll)
                self._guarded("checkpoint", store.checkpoint)
                self._set_store(None)
                # A close() that gave up meanwhile interrupted the checkpoint: DuckDB's own,
                # at close, could not be interrupted.
                store.close(checkpoint=not self._abandoned.is_set())
        # Only while degraded is anything left: the writer drains the queue before it stops.
        self._drop_queued("degraded")

    def _write(self, batch: list[Exchange]) -> None:
        """Store the batch (or count it as failed), then give its bytes back."""
        try:
            store = self._store
            if store is not None and not store.intact():
                self._vanished(store)
                self._open()  # at once: a deleted folder is simply recreated
                store = self._store
            if store is None:
                self._metrics.record_write_error(len(batch))
                return
            self._insert(store, batch)
            if self._store is store and not store.intact():
                # Deleted while this batch was written: it went into the unlinked file.
                self._vanished(store)
                self._open()
            elif self._store is store and store.worn() and not self._abandoned.is_set():
                self._reopen(store)
        finally:
            for exchange in batch:
                exchange.release()

    # -- housekeeping -------------------------------------------------------------------------
    def _roll(self) -> None:
        assert self._store is not None
        rolled = self._store.roll()
        if rolled:
            log.info("parquet_rolled", exchanges=rolled)

    def _retention(self) -> None:
        assert self._store is not None
        deleted = self._store.retention()
        if deleted:
            log.info("retention_applied", exchanges_deleted=deleted)

    def _guarded(self, what: str, action: Any) -> None:
        # Housekeeping failures are logged and counted; the writer keeps writing.
        try:
            action()
        except Exception as error:
            if self._abandoned.is_set():  # interrupted by close(): nothing is lost by it
                log.warning("recorder_task_interrupted", task=what)
                return
            self._metrics.record_write_error()
            log.error("recorder_task_failed", task=what, error=safe_error(error))

    def _settle_hand(self) -> None:
        """Count the batch the writer had taken as dropped; once, whoever comes first."""
        with self._hand_lock:
            hand, self._hand = self._hand, []
        for _ in hand:
            self._metrics.record_dropped()
        if hand:
            log.error("records_unconfirmed_at_close", count=len(hand))

    def _drop_queued(self, reason: str) -> None:
        dropped = 0
        while True:
            try:
                exchange = self._queue.get_nowait()
            except queue.Empty:
                break
            self._metrics.record_dropped()
            exchange.release()
            dropped += 1
        if dropped:
            log.error("records_dropped_at_close", count=dropped, reason=reason)
