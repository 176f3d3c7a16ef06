"""`Store`: one open database file, as the recorder's writer thread uses it.

It owns the write connection and a reader cursor, and remembers which file it opened (device
and inode): DuckDB keeps writing into a file that was deleted or replaced under it, and every
such write is lost, so the writer asks `intact()` around each batch and reopens when the
answer is no. Everything here raises on failure; `Recorder` decides what a failure means.

Example:

    store = Store.open(config.storage)
    store.insert(to_columns(batch, privacy), [e.request_id for e in batch])
    if not store.intact():
        lost = store.salvage()   # rolls what it can to Parquet, counts the rest
    store.close()
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import duckdb
from shadowtap.config import StorageConfig
from shadowtap.recorder import frames, parquet
from shadowtap.recorder.rows import Batch, Columns, rows
from shadowtap.recorder.schema import COLUMNS, connect
from shadowtap.redact import redact

# DuckDB checkpoints (compresses the WAL into the file) whenever the WAL passes this size. At
# its 16 MB default it checkpoints every few batches and rewrites the same half-full row group
# each time; at 64 MB the writer sustains ~1.5x the rows per CPU second, checkpoint included,
# and the file comes out smaller. The cost: a WAL of up to 64 MB to replay after `kill -9`.
CHECKPOINT_THRESHOLD = "64MB"

# DuckDB keeps what a connection wrote in its buffer pool: checkpointed blocks as a cache (up
# to `storage.memory_limit`) and the overflow blocks of long strings (prompts and answers past
# a few kB) for as long as the database is open, which no limit evicts: past the limit a write
# fails with "failed to pin block" and DuckDB invalidates the database. Reopening the file
# gives all of it back, so the writer reopens after this many bytes handed to DuckDB
# (`frames.size`: its texts, where long strings are) and after RECYCLE_S, far below the
# limit. Measured: 1 MB rows at 256MB failed after ~120 MB written on one connection;
# reopened every 64 MB, none failed. (Texts are now cut at `storage.max_text_bytes`, see
# caps.py, which keeps overflow strings out by default.)
RECYCLE_BYTES = 64 * 1024 * 1024
RECYCLE_S = 300.0

# A commit whose automatic checkpoint then failed: the rows are in the WAL (written), but the
# database is invalidated and must be reopened.
DURABLE_COMMIT = "COMMIT succeeded and is durable"

# Errors that say the data, not the storage, is at fault: a value DuckDB cannot convert or
# store, or orjson refusing one. Any other failure of a write is the storage's (full
# disk, I/O error, a database DuckDB invalidated after a fatal error, a closed connection).
DATA_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.DataError,
    duckdb.IntegrityError,
    duckdb.ProgrammingError,
    TypeError,
    ValueError,
    ArithmeticError,
)


def is_storage_error(error: BaseException) -> bool:
    return not isinstance(error, DATA_ERRORS)


def is_fatal(error: BaseException) -> bool:
    """DuckDB invalidated the database: every later statement fails until it is reopened."""
    return isinstance(error, duckdb.FatalException) or "database has been invalidated" in str(error)


def safe_error(error: BaseException) -> str:
    """An exception as a log-safe string: DuckDB conversion errors quote the offending input,
    which may be a prompt or a key, so the quoted part is cut and the rest scrubbed."""
    message = re.sub(r"(?s)\bInput:.*", "Input: [dropped]", str(error))
    return f"{type(error).__name__}: {redact(message, pii=True)[:300]}"


def committed_anyway(error: BaseException) -> bool:
    """The batch's COMMIT is durable although the statement raised (see DURABLE_COMMIT)."""
    return is_fatal(error) and DURABLE_COMMIT in str(error)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class Store:
    def __init__(self, config: StorageConfig, con: duckdb.DuckDBPyConnection) -> None:
        self.config = config
        self.path = Path(config.path)
        self.con = con
        # A second cursor reads through MVCC, so admin API reads never wait for a batch.
        self.reader = con.cursor()
        self.identity = _identity(self.path)
        self.written = 0  # exchanges this store committed: the floor of a vanished file's loss
        self.bytes_written = 0  # text committed through this connection (RECYCLE_BYTES)
        self.opened_at = time.monotonic()
        self.analyzed: int | None = None  # the connection's pandas_analyze_sample, once set

    @classmethod
    def open(cls, config: StorageConfig) -> Store:
        """Open (creating the folder and file if need be) and migrate; raises on failure."""
        path = Path(config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        con = connect(path)
        try:
            # Partition dates and API timestamps are UTC whatever the host's zone is.
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
            con.execute(f"SET memory_limit = '{config.memory_limit}'")  # validated in config
            # One DuckDB thread: the batches reach DuckDB as NumPy object arrays, whose values
            # DuckDB converts holding the GIL, and with its worker threads every such step
            # is a GIL hand-off between threads (bench/recorder.py, load ~2.3: 104-112k rows/s
            # with redaction on 2 threads, 131-137k on one). It also leaves the sidecar's
            # other cores to the proxy; checkpoints, rolls and admin reads run on one.
            con.execute("SET threads = 1")
            # Always there (empty without parquet_dir), so retention can clean it either way.
            con.execute(parquet.PENDING_DDL)
            store = cls(config, con)
        except BaseException:
            con.close()
            raise
        if store.identity is None:  # opened, yet not there: a folder removed this very moment
            store.close()
            raise FileNotFoundError(f"{path} vanished while it was being opened")
        return store

    def worn(self) -> bool:
        """Time to reopen, so DuckDB gives back what it keeps for this connection."""
        return self.bytes_written >= RECYCLE_BYTES or time.monotonic() - self.opened_at >= RECYCLE_S

    def intact(self) -> bool:
        """False once the file at `path` is not the one this store writes (deleted, replaced,
        or its folder removed). One stat call."""
        return _identity(self.path) == self.identity

    def insert(self, batch: Batch, request_ids: list[str]) -> None:
        """The batch's rows (and its Parquet-pending ids) in one transaction."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            for table, columns in batch.items():
                if rows(columns):
                    self.analyzed = frames.insert(
                        con, table, columns, COLUMNS[table], analyzed=self.analyzed
                    )
            if self.config.parquet_dir is not None and request_ids:
                pending: Columns = {"request_id": request_ids, "roll": [None] * len(request_ids)}
                self.analyzed = frames.insert(
                    con,
                    parquet.PENDING_TABLE,
                    pending,
                    ("request_id", "roll"),
                    analyzed=self.analyzed,
                )
            con.execute("COMMIT")
        except BaseException:
            self.analyzed = None  # whatever failed, the next batch sets it again
            # The failed statement may already have ended the transaction.
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    def roll(self) -> int:
        assert self.config.parquet_dir is not None
        return parquet.roll(self.con, self.config.parquet_dir)

    def retention(self) -> int:
        assert self.config.retention_days is not None
        return parquet.apply_retention(
            self.con, self.config.retention_days, self.config.parquet_dir
        )

    def checkpoint(self) -> None:
        # Fold the WAL into the file so the next open does not replay it.
        self.con.execute("CHECKPOINT")

    def salvage(self) -> int:
        """For a file that is no longer at `path`: roll what it holds to Parquet if configured
        (the connection still reads the unlinked file), and return how many exchanges in it
        are now in no storage at all."""
        if self.config.parquet_dir is not None:
            with contextlib.suppress(Exception):
                self.roll()
            row = self.con.execute(f"SELECT count(*) FROM {parquet.PENDING_TABLE}").fetchone()
        else:
            row = self.con.execute("SELECT count(*) FROM exchanges").fetchone()
        return int(row[0]) if row else 0

    def close(self, *, checkpoint: bool = True) -> None:
        """`checkpoint=False`: leave the WAL as it is (every commit is durable in it and is
        replayed at the next open) instead of folding it into the file as DuckDB's close does,
        which can take seconds and cannot be interrupted."""
        if not checkpoint:
            with contextlib.suppress(Exception):
                self.con.execute("PRAGMA disable_checkpoint_on_shutdown")
        with contextlib.suppress(Exception):
            self.reader.close()
        with contextlib.suppress(Exception):
            self.con.close()
