"""Record through shadowtap with the openai client, stop it, replay to a fresh candidate: the
answers land beside the live ones, marked, and the report judges the candidate as built."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from shadowtap.config import GatesConfig
from shadowtap.recorder import open_readonly
from shadowtap.replay.run import ReplayOptions, ReplayRunner
from shadowtap.report.build import build_report
from shadowtap.report.html import render_html
from shadowtap.report.replayed import REPLAYED_LATENCY
from shadowtap.report.text import print_report

from tests.conftest import StartFake, StartShadowtap
from tests.replaying import record_traffic, replay_config

N = 40


async def test_a_replayed_candidate_is_stored_marked_and_reported_as_built(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    primary = await record_traffic(start_fake, start_shadowtap, db, N)
    same, reworded = await start_fake("ok"), await start_fake("paraphrase")
    config = replay_config(
        primary,
        {"same": same, "reworded": {"url": reworded.url, "model": "reworded-1"}},
    )
    for name in ("same", "reworded"):
        summary = await ReplayRunner(config, ReplayOptions(name, progress=False), db).run()
        assert summary.complete and summary.counts.answered == N and summary.recorded == N
    # Each recorded request was sent once, as recorded, with the candidate's model.
    assert len(same.chat_requests()) == len(reworded.chat_requests()) == N
    sent = [r.json for r in reworded.chat_requests()]
    assert {r["model"] for r in sent} == {"reworded-1"}
    assert sum(1 for r in sent if r.get("stream")) == len(range(0, N, 3))
    recorded = {r.json["messages"][-1]["content"] for r in primary.chat_requests()}
    assert sorted(r["messages"][-1]["content"] for r in sent) == sorted(recorded)

    con = open_readonly(db)
    rows = con.execute(
        "SELECT target, candidate_source, count(DISTINCT candidate_replay_run), count(*),"
        " count(*) FILTER (WHERE scores['similarity'] IS NOT NULL) FROM pairs"
        " GROUP BY ALL ORDER BY target"
    ).fetchall()
    assert rows == [
        ("live", "live", 0, N, N),
        ("reworded", "replay", 1, N, N),
        ("same", "replay", 1, N, N),
        ("secondary", "live", 0, N, N),
    ]
    con.close()

    # 0 disagreements in 40 pairs bound the drop under ~0.11, so 0.15 can pass on 40 pairs.
    gates = GatesConfig(
        max_agreement_drop=0.15, max_error_rate=0.2, max_p95_latency_ratio=None, min_pairs=30
    )
    report = build_report(db, gates)
    assert set(report.candidates) == {"live", "same", "reworded"}
    drop = {
        name: next(g.verdict for g in c.gates if g.gate == "agreement_drop")
        for name, c in report.candidates.items()
    }
    assert drop == {"live": "pass", "same": "pass", "reworded": "fail"}
    assert report.candidates["reworded"].verdict == "fail"

    # With the latency gate on, the replayed candidates' gate says what it compares.
    report = build_report(db, GatesConfig(max_p95_latency_ratio=100.0, min_pairs=30))
    latency = {
        name: next(g.note for g in c.gates if g.gate == "p95_latency_ratio")
        for name, c in report.candidates.items()
    }
    assert latency["live"] is None
    assert latency["same"] == latency["reworded"] == REPLAYED_LATENCY
    assert [report.candidates[n].replayed_pairs for n in ("live", "same", "reworded")] == [0, N, N]
    console = Console(record=True, width=200)
    print_report(report, console)
    assert f"reworded — FAIL — {N} pairs ({N} replayed)" in console.export_text()
    assert f"{N} pairs ({N} replayed)" in render_html(report)
