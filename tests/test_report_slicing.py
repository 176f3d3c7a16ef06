"""The report's working table at fleet size (issue 15): built in slices of request ids, so no
slice's joins spill, and kept compressed in a database file of its own. A report built in
slices is the report of one pass, to the last digit: the same pairs, each target's read in
request order (the order the seeded bootstraps draw from)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import duckdb
import pytest
from shadowtap.config import GatesConfig
from shadowtap.report import build_report, open_db, open_parquet, report_json, workspace
from shadowtap.report.sources import Source

from tests.report_data import FLAKY, NOISE, PARAPHRASE, make_exchanges, write

GATES = GatesConfig(max_cost_ratio=2.0, max_empty_rate=0.05, max_refusal_rate=0.05)
TENANTS = ("acme", "globex", "initech")


def comparable(report: Any) -> dict[str, Any]:
    data = report_json(report)
    for key in ("source", "generated_at", "notes"):
        data.pop(key)
    return data


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    exchanges = make_exchanges(
        1_200,
        {"same": NOISE, "paraphrase": PARAPHRASE, "flaky": FLAKY},
        seed=11,
        secondary_every=3,
        tools_every=5,
        slice_headers=lambda i: {"x-tenant": TENANTS[i % 3]},
    )
    base = tmp_path_factory.mktemp("sliced")
    db = write(exchanges, base / "s.duckdb", parquet_dir=base / "parquet")
    return db, base / "parquet"


def _open(recorded: tuple[Path, Path], kind: str) -> Source:
    return open_db(recorded[0]) if kind == "db" else open_parquet(recorded[1])


@pytest.mark.parametrize("kind", ["db", "parquet"])
def test_a_report_built_in_slices_is_the_report_of_one_pass(
    recorded: tuple[Path, Path], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = comparable(build_report(_open(recorded, kind), GATES, slice_by=["header:x-tenant"]))
    monkeypatch.setattr(workspace, "SLICE_REQUESTS", 100)
    source = _open(recorded, kind)
    sliced = comparable(build_report(source, GATES, slice_by=["header:x-tenant"]))
    assert source.tables is not None
    assert len(workspace.ranges(source.con, source.tables.exchanges)) >= 10  # really sliced
    assert sliced == whole
    targets = [
        t for (t,) in source.con.execute("SELECT DISTINCT target FROM report_pairs").fetchall()
    ]
    assert sorted(targets) == ["flaky", "paraphrase", "same", "secondary"]
    for target in targets:
        ids = source.con.execute(
            "SELECT request_id FROM report_pairs WHERE target = ?", [target]
        ).fetchall()
        assert ids == sorted(ids)  # the order every per-pair column is read in


HOSTILE_IDS = (
    "a'b",
    "'; DROP TABLE exchanges; --",
    "",
    " ",
    "Z",
    "z",
    "é",
    "\U0001f600",
    "x" * 10_000,
    "0190f0a0-0000-7000-8000-000000000000",
    "0190f0a0-0000-7000-8000-000000000000",  # twice: one request's rows never split
    "\\",
    "%",
)


def test_every_request_id_falls_in_exactly_one_slice_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bounds are SQL literals taken from the data: quotes, empty and huge ids, non-ASCII ones
    and duplicates must each land in exactly one slice, the slices in request order."""
    monkeypatch.setattr(workspace, "SLICE_REQUESTS", 2)
    con = duckdb.connect()
    con.execute("CREATE TABLE exchanges (request_id VARCHAR)")
    con.executemany("INSERT INTO exchanges VALUES (?)", [[i] for i in (*HOSTILE_IDS, None)])
    conditions = workspace.ranges(con, "exchanges")
    assert len(conditions) > 2
    assert con.execute("SELECT count(*) FROM exchanges").fetchone() == (len(HOSTILE_IDS) + 1,)
    slices = []
    for condition in conditions:
        found = con.execute(f"SELECT request_id FROM exchanges WHERE {condition}").fetchall()
        slices.append(sorted(i for (i,) in found))
    assert sorted(i for s in slices for i in s) == sorted(HOSTILE_IDS)  # each once, NULL none
    nonempty = [s for s in slices if s]
    for lower, upper in itertools.pairwise(nonempty):
        assert lower[-1] < upper[0]


def test_the_working_table_lives_in_its_own_compressed_database_file(
    recorded: tuple[Path, Path],
) -> None:
    source = open_db(recorded[0])  # read-only: the work database is written all the same
    build_report(source, GATES)
    found = source.con.execute(
        "SELECT database_name FROM duckdb_tables() WHERE table_name = 'report_pairs'"
    ).fetchall()
    assert found == [(workspace.WORK,)]
    (path,) = source.con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = ?", [workspace.WORK]
    ).fetchone()
    assert Path(path).parent.name.startswith(workspace.SPILL_PREFIX)
