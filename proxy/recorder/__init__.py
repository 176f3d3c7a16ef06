"""Storage of sampled exchanges in DuckDB (see README "Data in DuckDB").

`Recorder` is the proxy's sink: `record()` queues without blocking and a single writer thread
batches into the file. `schema` holds the public tables and the `pairs` view; `api_routes`
serves them live on the admin listener.
"""

from shadowtap.recorder.api import api_routes
from shadowtap.recorder.schema import (
    SCHEMA_VERSION,
    DatabaseLocked,
    SchemaError,
    connect,
    create_pairs_view,
    migrate,
    open_readonly,
    parquet_relations,
)
from shadowtap.recorder.writer import Recorder, RecorderClosed

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseLocked",
    "Recorder",
    "RecorderClosed",
    "SchemaError",
    "api_routes",
    "connect",
    "create_pairs_view",
    "migrate",
    "open_readonly",
    "parquet_relations",
]
