"""Storage of sampled exchanges in DuckDB (see README "Data in DuckDB").

`Recorder` is the proxy's sink: `record()` queues without blocking and a single writer thread
batches into the file. `schema` holds the public tables and the `pairs` view.
"""

from proxy.recorder.schema import (
    SCHEMA_VERSION,
    DatabaseLocked,
    SchemaError,
    connect,
    create_pairs_view,
    migrate,
    open_readonly,
    parquet_relations,
)

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseLocked",
    "SchemaError",
    "connect",
    "create_pairs_view",
    "migrate",
    "open_readonly",
    "parquet_relations",
]
