"""The DuckDB schema contract: migrations, the pairs view, opening files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from shadowtap.recorder import SCHEMA_VERSION, SchemaError, connect, migrate, open_readonly
from shadowtap.recorder.privacy import Privacy
from shadowtap.recorder.rows import to_columns
from shadowtap.recorder.schema import COLUMNS, schema_version

from tests.synthetic import synthetic_exchange

# The pairs view as migration 1 shipped it (no cost column): an older file carries this view.
V1_PAIRS = """
CREATE VIEW pairs AS
SELECT e.request_id, e.started_at, c.target, c.role, p.status AS primary_status,
       c.status AS candidate_status
FROM exchanges e
JOIN responses c ON c.request_id = e.request_id AND c.role <> 'primary'
LEFT JOIN responses p ON p.request_id = e.request_id AND p.role = 'primary'
"""


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def test_fresh_file_gets_every_migration_and_the_documented_columns(tmp_path: Path) -> None:
    con = connect(tmp_path / "new.duckdb")
    assert schema_version(con) == SCHEMA_VERSION == 5
    versions = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(1,), (2,), (3,), (4,), (5,)]
    for table, columns in COLUMNS.items():
        assert table_columns(con, table) == list(columns)
    # The writer's batches must line up with the tables column for column.
    batch = to_columns([synthetic_exchange(0)], Privacy("full"))
    for table, columns in batch.items():
        assert list(columns) == list(COLUMNS[table])
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'exchanges'"
        ).fetchall()
    )
    assert types["started_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["request_body"] == "JSON"
    assert types["header_names"] == "VARCHAR[]"
    assert types["slice_headers"] == "JSON"
    assert types["dialect"] == "VARCHAR"
    # Reopening applies nothing twice.
    con.close()
    con = connect(tmp_path / "new.duckdb")
    assert con.execute("SELECT count(*) FROM schema_version").fetchall() == [(5,)]


def test_a_version_1_file_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    assert migrate(old, target=1) == 1
    old.execute(V1_PAIRS)
    old.execute(
        "INSERT INTO exchanges VALUES ('r1', '2024-05-01 10:00:00+00', 'POST', "
        "'/v1/chat/completions', '/v1/chat/completions', 'gpt-4o', false, '{}', ['content-type'])"
    )
    old.execute(
        "INSERT INTO responses (request_id, target, role, status, latency_ms, text) VALUES "
        "('r1', 'primary', 'primary', 200, 100, 'a'), ('r1', 'small', 'candidate', 200, 50, 'b')"
    )
    old.execute("INSERT INTO scores VALUES ('r1', 'small', 'similarity', 0.75, NULL, NULL)")
    assert "cost_usd" not in table_columns(old, "responses")
    old.close()

    with pytest.raises(SchemaError, match="schema version 1"):
        open_readonly(path)

    con = connect(path)
    assert schema_version(con) == SCHEMA_VERSION
    assert "cost_usd" in table_columns(con, "responses")
    assert table_columns(con, "scores")[-1] == "threshold"
    rows = con.execute(
        "SELECT target, primary_latency_ms, candidate_latency_ms, candidate_cost_usd, "
        "scores['similarity'] FROM pairs"
    ).fetchall()
    assert rows == [("small", 100.0, 50.0, None, 0.75)]
    con.close()
    assert schema_version(open_readonly(path)) == SCHEMA_VERSION


def test_a_version_2_file_migrates_with_its_answers_marked_live(tmp_path: Path) -> None:
    path = tmp_path / "v2.duckdb"
    old = duckdb.connect(str(path))
    assert migrate(old, target=2) == 2
    old.execute("INSERT INTO exchanges (request_id, path) VALUES ('r1', '/v1/chat/completions')")
    old.execute(
        "INSERT INTO responses (request_id, target, role, status, text) VALUES "
        "('r1', 'primary', 'primary', 200, 'a'), ('r1', 'small', 'candidate', 200, 'b')"
    )
    old.close()

    con = connect(path)
    assert schema_version(con) == SCHEMA_VERSION
    assert table_columns(con, "responses")[-2:] == ["source", "replay_run"]
    assert table_columns(con, "exchanges")[-2:] == ["slice_headers", "dialect"]
    # Exchanges from before migration 5 were all OpenAI chat, the only API then.
    assert con.execute("SELECT dialect FROM exchanges").fetchall() == [("openai-chat",)]
    assert table_columns(con, "replay_claims") == [
        "request_id",
        "target",
        "replay_run",
        "claimed_at",
    ]
    rows = con.execute(
        "SELECT target, primary_source, candidate_source, candidate_replay_run FROM pairs"
    ).fetchall()
    assert rows == [("small", "live", "live", None)]
    # An answer written later without naming `source` is live too.
    con.execute(
        "INSERT INTO responses (request_id, target, role, status) VALUES "
        "('r1', 'other', 'candidate', 200)"
    )
    other = con.execute("SELECT source FROM responses WHERE target = 'other'").fetchall()
    assert other == [("live",)]


def test_a_file_from_a_newer_shadowtap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    con = connect(path)
    con.execute("INSERT INTO schema_version VALUES (99, now())")
    con.close()
    with pytest.raises(SchemaError, match="newer"):
        connect(path)


def test_pairs_view_has_one_row_per_non_primary_target_with_a_score_map(tmp_path: Path) -> None:
    con = connect(tmp_path / "p.duckdb")
    con.execute(
        "INSERT INTO exchanges (request_id, started_at, path) VALUES "
        "('r1', now(), '/v1/chat/completions'), ('r2', now(), '/v1/chat/completions')"
    )
    con.execute(
        "INSERT INTO responses (request_id, target, role, status, error, text) VALUES "
        "('r1', 'primary', 'primary', 200, NULL, 'p'), "
        "('r1', 'secondary', 'secondary', 200, NULL, 's'), "
        "('r1', 'small', 'candidate', NULL, 'timeout after 60 s', NULL), "
        "('r2', 'primary', 'primary', 200, NULL, 'p2'), "
        "('r2', 'small', 'candidate', 200, NULL, 'c2')"
    )
    con.execute(
        "INSERT INTO scores (request_id, target, scorer, score) VALUES "
        "('r1', 'secondary', 'similarity', 0.9), ('r1', 'secondary', 'exact', NULL), "
        "('r2', 'small', 'similarity', 0.4)"
    )
    rows = con.execute(
        "SELECT request_id, target, role, primary_text, candidate_text, candidate_error, scores "
        "FROM pairs ORDER BY request_id, target"
    ).fetchall()
    assert rows == [
        ("r1", "secondary", "secondary", "p", "s", None, {"similarity": 0.9, "exact": None}),
        ("r1", "small", "candidate", "p", None, "timeout after 60 s", {}),
        ("r2", "small", "candidate", "p2", "c2", None, {"similarity": 0.4}),
    ]


def test_pairs_build_over_parquet_rolled_before_later_migrations(tmp_path: Path) -> None:
    # A fleet's roll-up holds files an older shadowtap wrote: no source or run columns.
    from shadowtap.report.sources import open_parquet

    old = duckdb.connect()
    migrate(old, target=2)
    old.execute("INSERT INTO exchanges (request_id, started_at) VALUES ('r1', now())")
    old.execute(
        "INSERT INTO responses (request_id, target, role, status) VALUES "
        "('r1', 'primary', 'primary', 200), ('r1', 'small', 'candidate', 200)"
    )
    old.execute(
        "INSERT INTO scores (request_id, target, scorer, score) VALUES ('r1', 'small', 's', 1)"
    )
    for table in ("exchanges", "responses", "scores"):
        folder = tmp_path / table / "date=2025-01-01"
        folder.mkdir(parents=True)
        old.execute(f"COPY {table} TO '{folder / 'old.parquet'}' (FORMAT parquet)")
    pairs = open_parquet(tmp_path).con.execute(
        "SELECT target, candidate_source, candidate_replay_run FROM pairs"
    )
    assert pairs.fetchall() == [("small", "live", None)]
