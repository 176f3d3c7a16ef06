"""The report computed as columns (issue 15): no Python object per pair, and what moved into
SQL (the refusal pre-filter, slice values) decides exactly as the Python it replaced.

Data is recorded through the proxy's own writer into a real DuckDB file (tests/report_data.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from shadowtap.config import GatesConfig
from shadowtap.report import build_report, open_db
from shadowtap.report.reliability import REFUSAL_WINDOW, Answer, check
from shadowtap.report.slices import VALUE_CHARS

from tests.report_data import FLAKY, NOISE, make_exchanges, write

# Answers the refusal check must judge as `reliability.check` does: odd case and whitespace,
# curly quotes, non-ASCII look-alikes, a phrase past the checked window, blank ones.
ANSWERS = (
    "I CANNOT HELP WITH that request.",
    "i\tcan't\n\n   assist   with this",
    "Sorry, I can\u2019t help with that.",  # a curly apostrophe: folded to ' by the check
    "\uff29 cannot provide that",  # a full-width I: not an ASCII i
    "I cannot\u2003provide it",  # an em space between the words
    "The capital of France is Paris.",
    "Unable to comply? No: here is the answer, able and willing.",  # anchors, no phrase
    "x" * (REFUSAL_WINDOW - 5) + " I cannot help with",  # the phrase starts past the window
    "   ",
    "",
    "I'M SORRY, BUT I CAN'T",
    # the head is cut only past REFUSAL_WINDOW characters: a phrase ending at the window's
    # last character is in it; so is one after 300 two-byte characters (over 400 bytes)
    "x" * (REFUSAL_WINDOW - 17) + " I cannot provide",
    "\u00e9" * 300 + " I cannot provide",
    "x" * (REFUSAL_WINDOW - 16) + " I cannot provide",  # its last letter past the window
)
# Slice values the SQL must normalise as `" ".join(value.split())`, cut to VALUE_CHARS.
TENANTS = (
    "acme\u2003corp",
    "  acme   corp ",
    "a\x1cb",
    "plain",
    "t" * 100,
    "\u00e9t\u00e9 " * 30,
)


def _blank(text: str | None) -> bool:
    return text is None or text.strip(" ") == ""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exchanges = make_exchanges(
        len(ANSWERS) * 6,
        {"small": NOISE},
        seed=7,
        slice_headers=lambda i: {"x-tenant": TENANTS[i % len(TENANTS)]},
    )
    for i, exchange in enumerate(exchanges):
        exchange.results["small"].completion.text = ANSWERS[i % len(ANSWERS)]
    return write(exchanges, tmp_path_factory.mktemp("hostile") / "h.duckdb")


def test_refusals_and_blanks_are_found_as_the_python_check_finds_them(hostile: Path) -> None:
    report = build_report(open_db(hostile), GatesConfig(), slice_by=["header:x-tenant"])
    small = report.candidates["small"]
    con = open_db(hostile).con
    rows = con.execute(
        "SELECT candidate_text, candidate_finish_reason FROM pairs"
        " WHERE target = 'small' AND candidate_status = 200"
    ).fetchall()
    expected = [
        check(
            Answer(
                "",
                True,
                finish,
                _blank(text),
                (text or "")[:REFUSAL_WINDOW],
                None,
                None,
                None,
                None,
                None,
            )
        )
        for text, finish in rows
    ]
    for name in ("refused", "empty"):
        broken = sum(1 for outcome in expected if outcome[name])
        assert small.reliability[name].n == len(expected)
        assert small.reliability[name].estimate == pytest.approx(broken / len(expected)), name
    # the ones the SQL alone could not settle really are refusals, and the rest are not
    refusing = {text for (text, _), o in zip(rows, expected, strict=True) if o["refused"]}
    assert refusing == {ANSWERS[i] for i in (0, 1, 2, 4, 10, 11, 12)}


def test_slice_values_are_normalised_like_python(hostile: Path) -> None:
    report = build_report(open_db(hostile), GatesConfig(), slice_by=["header:x-tenant"])

    def shown(value: str) -> str:
        text = " ".join(value.split())
        return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"

    rows = [r for r in report.candidates["small"].slices if r.dimension == "header:x-tenant"]
    per_value = {r.value: r.pairs for r in rows}
    expected: dict[str, int] = {}
    for i in range(len(ANSWERS) * 6):
        value = shown(TENANTS[i % len(TENANTS)])
        expected[value] = expected.get(value, 0) + 1
    assert per_value == expected  # "acme corp" twice over: two raw values, one slice


def test_python_memory_does_not_grow_with_python_objects_per_pair(tmp_path: Path) -> None:
    """6,000 pairs: the report as Python rows held ~1.5 kB a pair; as columns, a few numpy
    arrays of 8 bytes a pair. DuckDB's own memory is bounded by its memory_limit."""
    pairs = 6_000
    db = write(make_exchanges(pairs // 2, {"small": NOISE}, seed=3), tmp_path / "m.duckdb")
    source = open_db(db)
    tracemalloc.start()
    try:
        build_report(source, GatesConfig())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * pairs, f"{peak / pairs:.0f} bytes a pair"


def test_a_killed_reports_spill_files_are_removed_by_the_next(
    hostile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = tmp_path / f"shadowtap-report-{gone.stdout.strip()}-x1"
    alive = tmp_path / f"shadowtap-report-{os.getpid()}-x2"
    for directory in (dead, alive):
        directory.mkdir()
        (directory / "duckdb_temp_storage-0.tmp").write_bytes(b"\0" * 1024)
    build_report(open_db(hostile), GatesConfig())
    assert not dead.exists()  # its process is gone: nobody else will remove it
    assert alive.exists()  # a running report's (here: this process's own) is left alone


def test_latency_histograms_count_each_primary_answer_once(tmp_path: Path) -> None:
    """Two candidates on the same requests: the primary's histogram counts each request's
    answer once (not once per candidate), each candidate's its own successful answers, all on
    edges that span every latency shown."""
    requests = 60
    exchanges = make_exchanges(requests, {"small": NOISE, "flaky": FLAKY}, seed=11)
    db = write(exchanges, tmp_path / "h.duckdb")
    report = build_report(open_db(db), GatesConfig())
    primary = [e.results["primary"].completion.latency_s * 1000 for e in exchanges]
    assert sum(report.primary_latency_histogram) == requests
    for name in ("small", "flaky"):
        answered = [
            e.results[name].completion.latency_s * 1000
            for e in exchanges
            if e.results[name].completion.error is None
        ]
        assert sum(report.candidates[name].latency_histogram) == len(answered)
        primary += answered
    edges = report.latency_edges_ms
    assert len(edges) == len(report.primary_latency_histogram) + 1
    assert edges[0] == pytest.approx(min(primary)) and edges[-1] == pytest.approx(max(primary))
