"""No evidence is never a pass: verdicts when scores, the noise floor or pairs are missing.

Each test writes known-truth traffic through the real recorder (tests/report_data.py) and
reads it back with the real report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shadowtap.cli import main
from shadowtap.config import GatesConfig
from shadowtap.report import build_report, open_db, render_text
from shadowtap.scorers.registry import resolve_scorers

from tests.report_data import IDENTICAL, NOISE, Behaviour, make_exchanges, write

RAISES = Behaviour(agreement=None, scoring="error")
INAPPLICABLE = Behaviour(agreement=None, scoring="not_applicable")
UNSCORED = Behaviour(agreement=None, scoring="absent")
# Similarity ~ Beta(17.4, 2.6), mean 0.87: 0.03 under the noise floor's 0.9, inside a 0.05 gate.
CLOSE = Behaviour(agreement=(17.4, 2.6))
# A 5% error gate (0 errors in 200 pairs clear it) and no slice gate: only the agreement gate
# under test is open.
GATES = GatesConfig(max_error_rate=0.05, max_slice_drop=None)


def agreement(report, name: str, scorer: str = "similarity"):  # type: ignore[no-untyped-def]
    return next(
        g
        for g in report.candidates[name].gates
        if g.gate == "agreement_drop" and g.scorer == scorer
    )


@pytest.fixture(scope="module")
def unscored_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    candidates = {"raises": RAISES, "inapplicable": INAPPLICABLE, "unscored": UNSCORED}
    path = tmp_path_factory.mktemp("evidence") / "e.duckdb"
    return write(make_exchanges(200, {**candidates, "identical": IDENTICAL}, seed=5), path)


@pytest.mark.parametrize(
    ("name", "reason", "said"),
    [
        ("raises", "scorer_errors", "raised on all 200 pairs"),
        ("inapplicable", "not_applicable", "did not apply to any of 200 pairs"),
        ("unscored", "no_rows", "stored no score for unscored"),
    ],
)
def test_a_gate_without_scores_is_insufficient_with_its_reason(
    unscored_db: Path, name: str, reason: str, said: str
) -> None:
    # Every other gate of these candidates passes (they answer like the primary): before the
    # fix the agreement gate was "skipped" and the candidate passed on no agreement evidence.
    report = build_report(open_db(unscored_db), GATES)
    gate = agreement(report, name)
    assert (gate.verdict, gate.reason) == ("insufficient", reason)
    assert gate.note is not None and said in gate.note
    assert report.candidates[name].verdict == "insufficient"
    assert all(g.verdict == "pass" for g in report.candidates[name].gates if g is not gate)
    text = render_text(report)
    assert "every gate's interval clears its limit" in text  # said for `identical` only
    assert text.count("every gate's interval clears its limit") == 1
    assert f"no evidence for agreement_drop[similarity] ({reason.replace('_', ' ')})" in text
    assert report.candidates["identical"].verdict == "pass"


def test_scorers_come_from_the_config_too(unscored_db: Path) -> None:
    # A configured scorer that stored nothing for anyone is a gate without evidence.
    scorers = resolve_scorers(
        {"similarity": {"type": "text_similarity"}, "tools": {"type": "tool_calls"}}
    )
    report = build_report(open_db(unscored_db), GATES, scorers=scorers)
    tools = agreement(report, "identical", "tools")
    assert (tools.verdict, tools.reason) == ("insufficient", "no_rows")
    assert report.candidates["identical"].verdict == "insufficient"
    # gates.scorers narrows the agreement gate to the scorers that matter.
    narrowed = build_report(
        open_db(unscored_db), GATES.model_copy(update={"scorers": ["similarity"]}), scorers=scorers
    )
    assert narrowed.candidates["identical"].verdict == "pass"


def test_no_evidence_exits_0_but_never_says_pass(unscored_db: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["report", "--db", str(unscored_db), "--candidate", "raises", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["candidates"]["raises"]
    assert data["verdict"] == "insufficient"
    gate = next(g for g in data["gates"] if g["gate"] == "agreement_drop")
    assert gate["reason"] == "scorer_errors" and gate["verdict"] == "insufficient"


@pytest.fixture(scope="module")
def floorless_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("floorless") / "f.duckdb"
    exchanges = make_exchanges(300, {"close": CLOSE, "identical": IDENTICAL}, secondary=None)
    return write(exchanges, path)


def test_without_a_noise_floor_the_agreement_gate_cannot_fail(floorless_db: Path) -> None:
    report = build_report(open_db(floorless_db), GATES)
    assert report.noise is None
    # Against 1.0 the drop is ~0.13, far over 0.05; the true drop is 0.03. Before the fix
    # this was a `fail` with exit code 1.
    gate = agreement(report, "close")
    assert gate.value.low is not None and gate.value.low > 0.05
    assert (gate.verdict, gate.reason) == ("insufficient", "no_noise_floor")
    assert gate.note is not None and "[secondary] rate" in gate.note
    assert "primary_deterministic" in gate.note
    assert report.candidates["close"].verdict == "insufficient"
    assert not report.any_failed
    # A candidate whose bound clears the limit even against 1.0 still passes.
    assert report.candidates["identical"].verdict == "pass"
    assert any("[secondary] rate" in note for note in report.notes)


def test_a_deterministic_primary_makes_one_the_noise_floor(floorless_db: Path) -> None:
    gates = GATES.model_copy(update={"primary_deterministic": True})
    report = build_report(open_db(floorless_db), gates)
    gate = agreement(report, "close")
    assert gate.verdict == "fail" and report.candidates["close"].verdict == "fail"
    assert report.candidates["identical"].verdict == "pass"


def test_the_comparison_with_the_noise_floor_rests_on_the_smaller_sample(
    tmp_path: Path,
) -> None:
    # 300 candidate pairs, but the secondary answered only every 15th request: 20 scores.
    exchanges = make_exchanges(300, {"same": NOISE}, secondary_every=15, seed=6)
    report = build_report(open_db(write(exchanges, tmp_path / "m.duckdb")), GatesConfig())
    gate = agreement(report, "same")
    assert gate.value.n == 20
    assert (gate.verdict, gate.reason) == ("insufficient", "too_few_pairs")
    # min_pairs (30) noise-floor scores need 10 more, i.e. at least 150 more candidate pairs
    # while the secondary keeps answering one request in 15 (more if the interval needs it).
    assert gate.more_pairs is not None and gate.more_pairs >= 150
    assert gate.note is not None and "300 candidate vs 20 noise-floor scores" in gate.note

    # With a secondary on every 5th request (60 scores) both samples clear min_pairs.
    exchanges = make_exchanges(300, {"same": NOISE}, secondary_every=5, seed=6)
    report = build_report(open_db(write(exchanges, tmp_path / "m5.duckdb")), GatesConfig())
    gate = agreement(report, "same")
    assert gate.value.n == 60 and gate.reason != "too_few_pairs"
