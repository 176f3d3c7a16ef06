"""Verdicts on generated traffic where the truth is known (see tests/report_data.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from shadowtap.config import GatesConfig
from shadowtap.report import SourceError, build_report, open_db, render_text, report_json
from shadowtap.report.model import Report

from tests.report_data import (
    FLAKY,
    IDENTICAL,
    NOISE,
    PARAPHRASE,
    PRICEY,
    ROUTES,
    SLOW,
    START,
    make_exchanges,
    write,
)

GATES = GatesConfig(max_cost_ratio=1.5)
PAIRS = 400
KNOWN = {
    "identical": IDENTICAL,
    "same": NOISE,
    "paraphrase": PARAPHRASE,
    "slow": SLOW,
    "flaky": FLAKY,
    "pricey": PRICEY,
}


@pytest.fixture(scope="module")
def known_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("known") / "known.duckdb"
    # 400 pairs: enough for a candidate with no errors to clear the 2% error gate with the
    # anytime interval, corrected for six candidates (0 errors in ~380 pairs does it).
    return write(make_exchanges(PAIRS, KNOWN, seed=1), path)


@pytest.fixture(scope="module")
def known(known_db: Path) -> Report:
    return build_report(open_db(known_db), GATES, examples=3)


def failed(report: Report, name: str) -> set[str]:
    return {g.gate for g in report.candidates[name].gates if g.verdict == "fail"}


def test_candidates_like_the_primary_pass(known: Report) -> None:
    for name in ("identical", "same"):
        candidate = known.candidates[name]
        assert candidate.verdict == "pass", render_text(known)
        assert all(g.verdict == "pass" for g in candidate.gates)


@pytest.mark.parametrize(
    ("name", "gate"),
    [
        ("paraphrase", "agreement_drop"),  # and on every slice: see below
        ("slow", "p95_latency_ratio"),
        ("flaky", "error_rate"),
        ("pricey", "cost_ratio"),
    ],
)
def test_a_worse_candidate_fails_on_its_gate_and_only_that(
    known: Report, name: str, gate: str
) -> None:
    assert known.candidates[name].verdict == "fail"
    # A candidate worse everywhere is worse on every slice too.
    expected = {gate, "slice_drop"} if gate == "agreement_drop" else {gate}
    assert failed(known, name) == expected
    others = [g for g in known.candidates[name].gates if g.gate not in expected]
    assert all(g.verdict == "pass" for g in others), render_text(known)


def test_measures_match_how_the_data_was_made(known: Report) -> None:
    slow = known.candidates["slow"]
    assert slow.latency.ratio_p50.low is not None and slow.latency.ratio_p50.high is not None
    assert slow.latency.ratio_p50.low < 2.0 < slow.latency.ratio_p50.high
    flaky = known.candidates["flaky"]
    assert flaky.error_rate.low is not None and flaky.error_rate.high is not None
    assert flaky.error_rate.low < 0.2 < flaky.error_rate.high
    drop = next(g for g in known.candidates["paraphrase"].gates if g.gate == "agreement_drop")
    assert drop.scorer == "similarity"
    assert drop.value.low is not None and drop.value.high is not None
    assert drop.value.low < 0.9 - 0.6 < drop.value.high  # Beta(18,2) vs Beta(6,4) means
    pricey = known.candidates["pricey"]
    assert pricey.usage_candidate.cost_usd == pytest.approx(3 * 2.0)  # $0.006 x 1,000
    assert pricey.usage_primary.cost_usd == pytest.approx(2.0)
    assert known.noise is not None and known.noise.pairs == PAIRS
    similarity = known.candidates["identical"].scorers[0]
    assert similarity.threshold == 0.8 and similarity.candidate.estimate == 1.0
    assert similarity.under_threshold is not None and similarity.under_threshold.estimate == 0
    assert similarity.noise is not None and similarity.noise.estimate == pytest.approx(
        0.9, abs=0.02
    )


def test_breakdown_and_examples(known: Report) -> None:
    paraphrase = known.candidates["paraphrase"]
    routes = [row for row in paraphrase.slices if row.dimension == "route"]
    assert sum(row.pairs for row in routes) == paraphrase.pairs == PAIRS
    assert {row.name for row in paraphrase.slices} == {
        "route=/v1/chat/completions",
        "route=/v1/responses",
        "model=gpt-4o",
        "model=gpt-4o-mini",
        "stream=yes",
        "stream=no",
    }  # one value only (tools, JSON mode, prompt length, turns): no slice
    examples = paraphrase.examples
    assert len(examples) == 3
    lowest = [e.scores["similarity"] for e in examples]
    assert lowest == sorted(lowest)
    assert all(e.request and e.request.startswith("Question ") for e in examples)
    assert all(e.primary_text and e.primary_text.startswith("Primary answer") for e in examples)
    assert all(e.candidate_text and "paraphrase says" in e.candidate_text for e in examples)


def test_a_small_sample_is_insufficient(tmp_path: Path) -> None:
    path = write(make_exchanges(12, {"small": NOISE}, seed=2), tmp_path / "small.duckdb")
    report = build_report(open_db(path), GatesConfig())
    small = report.candidates["small"]
    assert small.verdict == "insufficient"
    assert small.more_pairs is not None and small.more_pairs >= 30 - 12
    line = render_text(report)
    assert "INSUFFICIENT" in line and "more pairs" in line


def test_without_a_noise_floor_agreement_is_bounded_against_one(tmp_path: Path) -> None:
    exchanges = make_exchanges(200, {"identical": IDENTICAL, "same": NOISE}, secondary=None)
    gates = GatesConfig(max_error_rate=0.05)
    report = build_report(open_db(write(exchanges, tmp_path / "n.duckdb")), gates)
    assert report.noise is None
    assert any("no secondary" in note for note in report.notes)
    assert report.candidates["identical"].verdict == "pass"
    # Against perfect agreement the same-model replay (mean 0.9) is a 0.1 drop; without a
    # noise floor that cannot show it is worse than the primary is with itself.
    drop = report.candidates["same"].gates[0]
    assert (drop.verdict, drop.reason) == ("insufficient", "no_noise_floor")
    assert drop.note is not None and "1.0" in drop.note


def test_filters(known_db: Path) -> None:
    since = START + timedelta(minutes=200)  # one exchange a minute: 200 remain
    report = build_report(
        open_db(known_db), GATES, since=since, candidates=["slow"], route="/v1/responses"
    )
    assert list(report.candidates) == ["slow"]
    # exchange i started at minute i and went to ROUTES[i % 3]
    expected = sum(1 for i in range(200, PAIRS) if ROUTES[i % 3] == "/v1/responses")
    assert report.candidates["slow"].pairs == expected
    assert not [row for row in report.candidates["slow"].slices if row.dimension == "route"]
    with pytest.raises(SourceError, match="no pairs for candidate nope"):
        build_report(open_db(known_db), GATES, candidates=["nope"])


def test_json_document_shape(known: Report) -> None:
    data = report_json(known)
    assert set(data["candidates"]) == set(KNOWN)
    slow = data["candidates"]["slow"]
    assert slow["verdict"] == "fail" and slow["pairs"] == PAIRS
    gate = next(g for g in slow["gates"] if g["gate"] == "p95_latency_ratio")
    assert gate["verdict"] == "fail" and gate["limit"] == 1.5
    assert set(gate["value"]) == {"estimate", "low", "high", "n", "method"}
    assert data["noise"]["pairs"] == PAIRS


def test_a_gate_scorer_with_no_scores_has_no_evidence_and_is_named(known_db: Path) -> None:
    gates = GatesConfig(scorers=["similarity", "simliarity"])
    report = build_report(open_db(known_db), gates, candidates=["same"])
    typo = next(g for g in report.candidates["same"].gates if g.scorer == "simliarity")
    assert (typo.verdict, typo.reason) == ("insufficient", "no_rows")
    assert any("simliarity, which scored no pair" in note for note in report.notes)
    assert report.candidates["same"].verdict == "insufficient"  # no evidence is not a pass
