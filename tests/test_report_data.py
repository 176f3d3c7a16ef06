"""The generated traffic of `tests/report_data.py` reaches the report's pairs view."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.report_data import FLAKY, make_exchanges, write


def test_generated_data_reaches_the_pairs_view(tmp_path: Path) -> None:
    path = write(make_exchanges(40, {"small": FLAKY}, seed=3), tmp_path / "t.duckdb")
    con = duckdb.connect(str(path), read_only=True)
    counts = dict(con.execute("SELECT target, count(*) FROM pairs GROUP BY target").fetchall())
    assert counts == {"small": 40, "secondary": 40}
    errors = con.execute(
        "SELECT count(*) FROM pairs WHERE target = 'small' AND candidate_error IS NOT NULL"
    ).fetchone()
    assert errors is not None and 0 < errors[0] < 40
