"""`shadowtap report` on the command line: JSON shape, exit codes, config, HTML output.

Two tests run the installed console script in a subprocess (exit codes as CI sees them); the
rest go through `shadowtap.cli.main` in-process to stay fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shadowtap.cli import main

from tests.report_data import NOISE, SLOW, make_exchanges, write

SHADOWTAP = Path(sys.executable).with_name("shadowtap")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "cli.duckdb"
    # 400 pairs: 0 errors in ~330 clear the 2% error gate with two candidates reported.
    return write(make_exchanges(400, {"same": NOISE, "slow": SLOW}, seed=13), path)


def shadowtap(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHADOWTAP), "report", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_json_and_exit_code_1_when_a_candidate_fails(db: Path) -> None:
    result = shadowtap("--db", db, "--json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert set(data["candidates"]) == {"same", "slow"}
    slow, same = data["candidates"]["slow"], data["candidates"]["same"]
    assert (slow["verdict"], slow["pairs"], same["verdict"]) == ("fail", 400, "pass")
    failed = [g for g in slow["gates"] if g["verdict"] == "fail"]
    assert [g["gate"] for g in failed] == ["p95_latency_ratio"]
    assert failed[0]["value"]["low"] > failed[0]["limit"]
    for gate in same["gates"]:
        assert {"gate", "limit", "value", "verdict", "more_pairs", "note", "scorer"} <= set(gate)


def test_text_and_html_with_exit_code_0(db: Path, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    result = shadowtap("--db", db, "--candidate", "same", "--html", html)
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout and f"HTML report: {html}" in result.stdout
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_gates_come_from_the_config(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "shadowtap.toml"
    # Only [gates] (and [scorers]) are read: the unset ${SECRET} elsewhere must not matter.
    config.write_text(
        '[primary]\nurl = "https://api.example.com"\n'
        '[candidates.slow]\nurl = "http://127.0.0.1:1"\napi_key = "${UNSET_SECRET_FOR_TEST}"\n'
        "[gates]\nmax_p95_latency_ratio = 3.0\n",
        encoding="utf-8",
    )
    assert main(["report", "--db", str(db), "--config", str(config), "--json"]) == 0
    slow = json.loads(capsys.readouterr().out)["candidates"]["slow"]
    assert slow["verdict"] == "pass"
    assert next(g for g in slow["gates"] if g["gate"] == "p95_latency_ratio")["limit"] == 3.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "{tmp}/missing.duckdb"], "does not exist"),
        (["--db", "{db}", "--since", "last tuesday"], "--since"),
        (["--db", "{db}", "--candidate", "nope"], "no pairs for candidate nope"),
        (["--db", "{db}", "--config", "{tmp}/bad.toml"], "gates.max_latency: unknown key"),
        (["--db", "{db}", "--config", "{tmp}/range.toml"], "gates.confidence"),
        (["--db", "{db}", "--config", "{tmp}/slice.toml"], "report.slice_by"),
        (["--parquet", "{tmp}"], "no Parquet files"),
        (["--db", "{db}", "--examples", "-1"], "--examples"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    db: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    (tmp_path / "bad.toml").write_text("[gates]\nmax_latency = 2\n", encoding="utf-8")
    (tmp_path / "range.toml").write_text("[gates]\nconfidence = 1.5\n", encoding="utf-8")
    (tmp_path / "slice.toml").write_text(
        '[report]\nslice_by = ["header:authorization"]\n', encoding="utf-8"
    )
    argv = ["report", *(a.format(tmp=tmp_path, db=db) for a in args)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err


def test_a_locked_database_points_to_the_live_api(tmp_path: Path) -> None:
    # A running `serve` holds DuckDB's write lock; the report must say what to do instead.
    path = write(make_exchanges(5, {"same": NOISE}), tmp_path / "locked.duckdb")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True);"
            " time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        result = shadowtap("--db", path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert "open in another process" in result.stderr and "/api/pairs" in result.stderr


def test_parsing_report_arguments_loads_only_the_command_module() -> None:
    # `report --help` and argument errors should not pay for DuckDB, rich and the renderers.
    code = (
        "import sys, shadowtap.cli; shadowtap.cli.build_parser('report');"
        "print(sorted(m for m in sys.modules if m.startswith('shadowtap.report')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "['shadowtap.report', 'shadowtap.report.command']"
