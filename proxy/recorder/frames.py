"""A batch's columns as DuckDB reads them in bulk: one NumPy array per column.

DuckDB's fast insert path scans Arrow tables, pandas frames or NumPy arrays registered as a
view; NumPy is by far the lightest of the three to keep in a sidecar (importing it costs
~11 MB of RSS, pyarrow and pyarrow.compute ~45 MB). Numbers go as float64 arrays, which
DuckDB reads natively (no Python object per value, and no guessing of their type); the INSERT
casts them to the table's DOUBLE or INTEGER (exact: counts are within INTEGER's range,
`rows.checked`). Everything else goes as an object array, which only holds references to the
Python values already built (`rows.to_columns`): DuckDB infers its type from the values (str:
VARCHAR, bool: BOOLEAN, an aware datetime: TIMESTAMPTZ, a list of str: VARCHAR[]) and the
INSERT casts it to the table's type; a VARCHAR going into a JSON column is validated there.

Example:

    insert(con, "responses", batch["responses"], COLUMNS["responses"])  # in a transaction
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
from shadowtap.recorder.caps import CAPPED
from shadowtap.recorder.rows import TEXT_LIST_COLUMNS, Batch, Columns, rows
from shadowtap.recorder.schema import SCHEMA

Array = np.ndarray[Any, Any]

# DuckDB infers an object column's type from a sample of its values, 1,000 rows by default
# (`pandas_analyze_sample`). A column whose sampled values are all NULL is then looked at
# further, but one whose sampled lists are all empty is typed a list of NULL, and a later
# non-empty list fails the whole INSERT: a table with a list column is analyzed whole (for
# every table that doubles the scan's cost, measured, hence only there).
ANALYZE_DEFAULT = 1_000
TYPES: dict[str, dict[str, str]] = {
    table: {column.name: column.type for column in columns} for table, columns in SCHEMA.items()
}


def frame(table: str, columns: Columns) -> dict[str, Array]:
    """One 1-D array per column, by the column's type in `table`."""
    types = TYPES.get(table, {})
    return {name: _array(values, types.get(name)) for name, values in columns.items()}


def _array(values: list[Any], column_type: str | None) -> Array:
    if column_type == "DOUBLE":
        return _doubles(values)
    if column_type == "INTEGER":
        return np.array(values, dtype=np.float64)  # None becomes NaN, which DuckDB reads as NULL
    # Not `np.array(values)`: a column of equal-length lists, like `header_names`, would become
    # a 2-D array of their items.
    return np.fromiter(values, dtype=object, count=len(values))


def _doubles(values: list[Any]) -> Array:
    """None becomes NaN, which DuckDB reads as NULL. So does a real NaN (a plug-in's score, a
    clock gone wrong): a column holding one goes as text instead ('nan', and repr's exact
    digits for the rest), which the INSERT casts back to DOUBLE."""
    array = np.array(values, dtype=np.float64)
    if int(np.isnan(array).sum()) == values.count(None):
        return array
    text = [None if v is None else repr(float(v)) for v in values]
    return np.fromiter(text, dtype=object, count=len(text))


def insert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Columns,
    names: Sequence[str],
    *,
    analyzed: int | None = None,
) -> int:
    """INSERT the rows of `columns` into `table`'s columns `names` (all of them present in
    `columns`), in the connection's current transaction. `analyzed` is the sample size the
    connection was last set to, if known (each statement costs ~0.1 ms: a SET that would
    not change it is skipped); the one it is set to now is returned."""
    whole = any(name in TEXT_LIST_COLUMNS.get(table, ()) for name in names)
    sample = max(rows(columns), ANALYZE_DEFAULT) if whole else ANALYZE_DEFAULT
    if sample != analyzed:
        con.execute(f"SET pandas_analyze_sample = {sample}")
    # DuckDB finds the arrays by this local name (a Python replacement scan: the calling
    # frame's variables are looked at for a name that is no table). Registering them as a
    # view instead costs two more statements, each a change to the catalog: with them a batch
    # of 20 exchanges took ~8 ms of CPU, without them ~5 ms (a fixed cost per batch).
    # Named in the temp catalog, which holds only this connection's own objects (none): a
    # table or view of the user's database bearing the name comes before a replacement scan,
    # and would be read instead of the batch.
    _shadowtap_batch = frame(table, {name: columns[name] for name in names})
    cols = ", ".join(names)
    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM temp.main._shadowtap_batch")
    return sample


def size(batch: Batch) -> int:
    """About the bytes a batch hands DuckDB: the characters of its free texts (where long
    strings are; `caps.CAPPED`) and a flat 64 a row for everything else. One C-level pass
    per text column."""
    total = 0
    for table, columns in batch.items():
        total += 64 * rows(columns)
        for name, _ in CAPPED.get(table, ()):
            total += sum(map(len, filter(None, columns.get(name, ()))))
    return total
