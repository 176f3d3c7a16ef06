"""The DuckDB schema: numbered migrations, the `pairs` view, and opening a database file.

The tables are a public contract (documented in README "Data in DuckDB"): users query them
with their own SQL and `shadowtap report` reads them. Changes are made only by appending a
migration; a file written by an older shadowtap opens and is migrated in place at start.

Example:

    con = connect("shadowtap.duckdb")          # read-write, applies pending migrations
    con.sql("SELECT target, avg(scores['similarity']) FROM pairs GROUP BY target")

    ro = open_readonly("shadowtap.duckdb")     # while `serve` is stopped, e.g. for a report

    # Parquet roll-ups from a fleet of sidecars, read as one data set:
    con = duckdb.connect()
    create_pairs_view(con, *parquet_relations("/shared/shadowtap"), temporary=True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

TABLES = ("exchanges", "responses", "scores")  # what the writer records and the roll-up copies

# Migration 1 is the schema of the first release; 2 adds what reports need without a config
# (per-target cost, each score's threshold); 3 marks replayed answers; 4 stores slice headers;
# 5 records each exchange's API. Never edit a migration that has shipped: append.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE exchanges (
            request_id   VARCHAR,      -- UUIDv7, time-ordered
            started_at   TIMESTAMPTZ,
            method       VARCHAR,
            path         VARCHAR,
            route        VARCHAR,
            model        VARCHAR,
            stream       BOOLEAN,
            request_body JSON,         -- NULL when storage.bodies = "none"
            header_names VARCHAR[]     -- allow-listed names only; values are never stored
        );
        CREATE TABLE responses (
            request_id        VARCHAR,
            target            VARCHAR,  -- "primary", "secondary" or the candidate's name
            role              VARCHAR,  -- primary | secondary | candidate
            status            INTEGER,  -- NULL when no HTTP response arrived
            error             VARCHAR,
            latency_ms        DOUBLE,
            ttft_ms           DOUBLE,
            text              VARCHAR,
            tool_calls        JSON,
            finish_reason     VARCHAR,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            response_model    VARCHAR
        );
        CREATE TABLE scores (
            request_id VARCHAR,
            target     VARCHAR,
            scorer     VARCHAR,
            score      DOUBLE,          -- [0, 1], 1 = agreement; NULL = not applicable
            detail     JSON,
            error      VARCHAR          -- set when the scorer raised
        );
        """,
    ),
    (
        2,
        """
        ALTER TABLE responses ADD COLUMN cost_usd DOUBLE;
        ALTER TABLE scores ADD COLUMN threshold DOUBLE;
        """,
    ),
    (
        # `shadowtap replay`: a candidate's answer may come from a later replay of the recorded
        # request (`source` 'replay', or 'replay-redacted' when the stored request or answer had
        # been redacted); `replay_claims` is its write-ahead record of what it sent.
        3,
        """
        ALTER TABLE responses ADD COLUMN source VARCHAR DEFAULT 'live';
        ALTER TABLE responses ADD COLUMN replay_run VARCHAR;
        CREATE TABLE replay_claims (
            request_id VARCHAR,
            target     VARCHAR,
            replay_run VARCHAR,
            claimed_at TIMESTAMPTZ
        );
        """,
    ),
    (
        # The values of the headers `[report] slice_by` names (never a credential header; the
        # config refuses those), so the report can slice by tenant and the like.
        4,
        """
        ALTER TABLE exchanges ADD COLUMN slice_headers JSON;
        """,
    ),
    (
        # The route's API (`shadowtap.dialects`), in which the primary's answer was read. Rows
        # from before it were all OpenAI chat, the only API then.
        5,
        """
        ALTER TABLE exchanges ADD COLUMN dialect VARCHAR DEFAULT 'openai-chat';
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


# Every column of every table, declared once: its name, its DuckDB type (as
# `information_schema.columns.data_type` names it), the migration that added it, and what rows
# written before that migration read as. The writer's checks (`rows.TEXT_COLUMNS`...), the INSERT
# and Parquet column lists (`COLUMNS`) and the pairs view's stand-ins for columns an older
# roll-up lacks are derived from it; a test applies MIGRATIONS to a fresh file and checks the
# result against it, column by column.
@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    added: int = 1  # the migration that added the column
    before: str | None = None  # its value in rows written before `added` (None: NULL)

    @property
    def absent(self) -> str:
        """SQL for the column's value where a relation has no such column (older Parquet)."""
        return self.before or f"CAST(NULL AS {self.type})"


TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"
SCHEMA: dict[str, tuple[Column, ...]] = {
    "exchanges": (
        Column("request_id", "VARCHAR"),
        Column("started_at", TIMESTAMPTZ),
        Column("method", "VARCHAR"),
        Column("path", "VARCHAR"),
        Column("route", "VARCHAR"),
        Column("model", "VARCHAR"),
        Column("stream", "BOOLEAN"),
        Column("request_body", "JSON"),
        Column("header_names", "VARCHAR[]"),
        Column("slice_headers", "JSON", added=4),
        Column("dialect", "VARCHAR", added=5, before="'openai-chat'"),
    ),
    "responses": (
        Column("request_id", "VARCHAR"),
        Column("target", "VARCHAR"),
        Column("role", "VARCHAR"),
        Column("status", "INTEGER"),
        Column("error", "VARCHAR"),
        Column("latency_ms", "DOUBLE"),
        Column("ttft_ms", "DOUBLE"),
        Column("text", "VARCHAR"),
        Column("tool_calls", "JSON"),
        Column("finish_reason", "VARCHAR"),
        Column("prompt_tokens", "INTEGER"),
        Column("completion_tokens", "INTEGER"),
        Column("response_model", "VARCHAR"),
        Column("cost_usd", "DOUBLE", added=2),
        Column("source", "VARCHAR", added=3, before="'live'"),
        Column("replay_run", "VARCHAR", added=3),
    ),
    "scores": (
        Column("request_id", "VARCHAR"),
        Column("target", "VARCHAR"),
        Column("scorer", "VARCHAR"),
        Column("score", "DOUBLE"),
        Column("detail", "JSON"),
        Column("error", "VARCHAR"),
        Column("threshold", "DOUBLE", added=2),
    ),
    "replay_claims": (
        Column("request_id", "VARCHAR", added=3),
        Column("target", "VARCHAR", added=3),
        Column("replay_run", "VARCHAR", added=3),
        Column("claimed_at", TIMESTAMPTZ, added=3),
    ),
}

# The writer, the Parquet roll-up and replay insert and copy by these names, in this order.
COLUMNS: dict[str, tuple[str, ...]] = {
    table: tuple(column.name for column in columns) for table, columns in SCHEMA.items()
}

# Columns shown once per side in `pairs`: primary_<col> and candidate_<col>.
SIDE_COLUMNS = tuple(c for c in COLUMNS["responses"] if c not in ("request_id", "target", "role"))
# Columns added by later migrations, as rows written before them read: Parquet rolled by an
# older shadowtap has no such column at all, and the pairs view must still build over it.
ABSENT: dict[str, dict[str, str]] = {
    table: {column.name: column.absent for column in columns if column.added > 1}
    for table, columns in SCHEMA.items()
}

# One row per request x non-primary target (candidates and the secondary; `role` tells which).
# Scores are folded into a MAP scorer -> score; a scorer that appears twice for a pair (it
# should not) is averaged rather than breaking the view with a duplicate map key.
PAIRS_VIEW_SQL = """
CREATE OR REPLACE {temporary} VIEW {name} AS
WITH score_maps AS (
    SELECT request_id, target, map(list(scorer), list(score)) AS scores
    FROM (
        SELECT request_id, target, scorer, avg(score) AS score
        FROM {scores}
        GROUP BY request_id, target, scorer
    )
    GROUP BY request_id, target
)
SELECT
    e.request_id, e.started_at, e.method, e.path, e.route, e.model, e.stream,
    e.request_body, e.header_names, {slice_headers} AS slice_headers,
    c.target, c.role,
    {side_columns},
    coalesce(s.scores, MAP {{}}::MAP(VARCHAR, DOUBLE)) AS scores
FROM {exchanges} AS e
JOIN {responses} AS c ON c.request_id = e.request_id AND c.role <> 'primary'
LEFT JOIN {responses} AS p ON p.request_id = e.request_id AND p.role = 'primary'
LEFT JOIN score_maps AS s ON s.request_id = c.request_id AND s.target = c.target
"""


class SchemaError(Exception):
    """The database file cannot be used by this version of shadowtap; the message says why."""


class DatabaseLocked(SchemaError):
    """Another process (normally a running `shadowtap serve`) holds the file's write lock."""


def create_pairs_view(
    con: duckdb.DuckDBPyConnection,
    exchanges: str = "exchanges",
    responses: str = "responses",
    scores: str = "scores",
    *,
    name: str = "pairs",
    temporary: bool = False,
) -> None:
    """(Re)create the `pairs` view over any three relations with the current columns.

    The relations are SQL table expressions: table names, or e.g.
    `read_parquet('/data/responses/*/*.parquet', hive_partitioning = true)`.
    """
    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {responses}").fetchall()}
    exchange_columns = {
        row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {exchanges}").fetchall()
    }

    def side(alias: str, col: str) -> str:
        return f"{alias}.{col}" if col in present else ABSENT["responses"][col]

    sides = ",\n    ".join(
        f"{side('p', col)} AS primary_{col}, {side('c', col)} AS candidate_{col}"
        for col in SIDE_COLUMNS
    )
    con.execute(
        PAIRS_VIEW_SQL.format(
            temporary="TEMPORARY" if temporary else "",
            name=name,
            exchanges=exchanges,
            responses=responses,
            scores=scores,
            side_columns=sides,
            # Added by migration 4: exchanges rolled to Parquet before it have none.
            slice_headers="e.slice_headers"
            if "slice_headers" in exchange_columns
            else ABSENT["exchanges"]["slice_headers"],
        )
    )


def parquet_relations(parquet_dir: str | Path) -> tuple[str, str, str]:
    """`read_parquet` expressions for the roll-up written under `storage.parquet_dir`."""
    base = Path(parquet_dir)
    rels = []
    for table in TABLES:
        glob = str(base / table / "date=*" / "*.parquet").replace("'", "''")
        rels.append(f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)")
    return rels[0], rels[1], rels[2]


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The highest applied migration; 0 for a file shadowtap has never written."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'"
        " AND schema_name = 'main' AND database_name = current_database()"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection, target: int = SCHEMA_VERSION) -> int:
    """Apply every migration above the file's version up to `target`, each in a transaction.

    Returns the version the file is at afterwards. The pairs view is recreated whenever a
    migration ran, so it always matches the current columns.
    """
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {current} is newer than this shadowtap supports "
            f"({SCHEMA_VERSION}); upgrade shadowtap"
        )
    if current >= target:
        return current
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMPTZ)"
    )
    for version, sql in MIGRATIONS:
        if current < version <= target:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(sql)
                con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    if target == SCHEMA_VERSION:
        create_pairs_view(con)
    return target


def _connect(path: str | Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as error:
        if "lock" in str(error).lower():
            raise DatabaseLocked(
                f"{path} is open in another process (a running `shadowtap serve`?). Read it "
                "live through the admin API (GET /api/pairs, /api/summary) or stop serve first."
            ) from None
        raise


def connect(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open (or create) the file read-write and bring its schema to the current version."""
    con = _connect(path, read_only=False)
    try:
        migrate(con)
    except BaseException:
        con.close()
        raise
    return con


def open_readonly(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open an existing file for reading; it must already be at the current schema version."""
    if not Path(path).exists():
        raise SchemaError(f"{path} does not exist")
    con = _connect(path, read_only=True)
    version = schema_version(con)
    if version != SCHEMA_VERSION:
        con.close()
        raise SchemaError(
            f"{path} has schema version {version}, this shadowtap needs {SCHEMA_VERSION}; "
            "open it once read-write (shadowtap.recorder.connect, or start serve) to migrate it"
        )
    return con
