"""The tables are declared once (`schema.SCHEMA`); the migrations must build exactly that, and
everything else that names columns is derived from it."""

from __future__ import annotations

from pathlib import Path

import duckdb
from shadowtap.recorder import connect, migrate
from shadowtap.recorder.rows import INT32_COLUMNS, TEXT_COLUMNS, TEXT_LIST_COLUMNS
from shadowtap.recorder.schema import COLUMNS, MIGRATIONS, SCHEMA, TABLES, create_pairs_view

# Tables a migrated file holds that are bookkeeping, not data: not part of the declaration.
BOOKKEEPING = {"schema_version"}


def described(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    """Each base table's (column, type) in column order, as DuckDB reports it."""
    rows = con.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_catalog, table_schema, table_name) "
        "WHERE t.table_type = 'BASE TABLE' ORDER BY c.table_name, c.ordinal_position"
    ).fetchall()
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        tables.setdefault(table, []).append((column, data_type))
    return tables


def test_the_migrations_build_exactly_the_declared_tables(tmp_path: Path) -> None:
    con = connect(tmp_path / "fresh.duckdb")
    found = described(con)
    declared = {t: [(c.name, c.type) for c in columns] for t, columns in SCHEMA.items()}
    assert {t: cols for t, cols in found.items() if t not in BOOKKEEPING} == declared


def test_each_column_was_added_by_the_migration_it_names(tmp_path: Path) -> None:
    # A file stopped at each version has exactly the columns declared as added by then.
    for version, _ in MIGRATIONS:
        con = duckdb.connect(str(tmp_path / f"v{version}.duckdb"))
        migrate(con, target=version)
        found = {t: cols for t, cols in described(con).items() if t not in BOOKKEEPING}
        declared = {
            t: [(c.name, c.type) for c in columns if c.added <= version]
            for t, columns in SCHEMA.items()
        }
        assert found == {t: cols for t, cols in declared.items() if cols}, version
        con.close()


def test_the_derived_forms_follow_the_declaration() -> None:
    for table, columns in SCHEMA.items():
        assert COLUMNS[table] == tuple(c.name for c in columns)
    assert TEXT_COLUMNS["scores"] == ("request_id", "target", "scorer", "detail", "error")
    assert TEXT_LIST_COLUMNS["exchanges"] == ("header_names",)
    assert INT32_COLUMNS == ("status", "prompt_tokens", "completion_tokens")
    assert set(TABLES) < set(SCHEMA)


def test_the_pairs_view_builds_over_tables_that_predate_every_later_column(
    tmp_path: Path,
) -> None:
    # What a Parquet roll-up written by the first release looks like: version 1 columns only.
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    for table in TABLES:
        first = ", ".join(f"{c.name} {c.type}" for c in SCHEMA[table] if c.added == 1)
        con.execute(f"CREATE TABLE {table} ({first})")
    con.execute("INSERT INTO exchanges (request_id) VALUES ('r1')")
    con.execute(
        "INSERT INTO responses (request_id, target, role) VALUES "
        "('r1', 'primary', 'primary'), ('r1', 'small', 'candidate')"
    )
    create_pairs_view(con, temporary=True)
    row = con.execute(
        "SELECT candidate_source, candidate_cost_usd, candidate_replay_run, slice_headers "
        "FROM pairs"
    ).fetchall()
    assert row == [("live", None, None, None)]
