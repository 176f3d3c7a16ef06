"""`shadowtap demo` end to end: verdicts match how the simulated candidates were built."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import aiohttp
import duckdb
import pytest
from shadowtap.demo.run import EXPECTED
from shadowtap.demo.setup import GATED_SCORERS

# Enough for every gated scorer to reach the report's 30-pair minimum, and for fast-agree's
# errors to clear the 5% gate with the anytime interval corrected for five candidates (0
# errors need ~180 pairs; 280 tolerate the 2 a very busy machine's timeouts can cause), and
# for its ~65 tool calls to clear the 30% broken-tool-call gate (~46 needed).
REQUESTS = 280


def failed_gates(candidate: dict) -> set[str]:
    return {gate["gate"] for gate in candidate["gates"] if gate["verdict"] == "fail"}


@pytest.mark.slow
async def test_demo_verdicts_match_the_construction(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "shadowtap.cli", "demo", "--requests", str(REQUESTS)),
        *("--speed", "20", "--out", str(out), "--no-progress"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    metrics_text = ""
    try:
        async with asyncio.timeout(90):
            while line := (await process.stdout.readline()).decode():
                lines.append(line)
                found = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", line)
                if found and not metrics_text:
                    # /metrics is live while the demo runs: scrape it mid-run.
                    async with aiohttp.ClientSession() as session:
                        async with session.get(found.group(1)) as response:
                            assert response.status == 200
                            metrics_text = await response.text()
            code = await process.wait()
    finally:
        if process.returncode is None:  # timed out or failed: never left running
            process.kill()
            await process.wait()
    output = "".join(lines)
    assert code == 0, output
    assert "shadowtap_" in metrics_text
    assert "verdicts as the candidates were built" in output
    for path in ("shadowtap.toml", "shadowtap.duckdb", "report.html", "report.json"):
        assert (out / path).exists(), path
        assert str(out / path) in output, path  # printed whole, ready to copy

    html = (out / "report.html").read_text()
    assert all(name in html for name in EXPECTED)
    report = json.loads((out / "report.json").read_text())["candidates"]
    assert {name: c["verdict"] for name, c in report.items()} == EXPECTED
    # Each fails for the reason it was built to fail (paraphrase, worse everywhere, on every
    # slice too; its drifted tool arguments may also leave a tool's declared range).
    assert {"agreement_drop", "slice_drop"} <= failed_gates(report["paraphrase"])
    assert failed_gates(report["paraphrase"]) <= {
        "agreement_drop",
        "slice_drop",
        "invalid_tool_call_rate",
    }
    # tool-breaker is fine on average and breaks on tool calls: the tool slice is its worst.
    assert failed_gates(report["tool-breaker"]) == {"invalid_tool_call_rate"}
    assert report["tool-breaker"]["slices"][0]["dimension"] == "tools"
    assert report["tool-breaker"]["slices"][0]["value"] == "yes"
    assert '<mark class="ins">' in html  # the worst slices' pairs, differences marked
    paraphrase_failed = {
        g["scorer"] for g in report["paraphrase"]["gates"] if g["verdict"] == "fail"
    }
    assert "text_similarity" in paraphrase_failed
    assert failed_gates(report["flaky"]) == {"error_rate"}
    gated = {g["scorer"] for g in report["fast-agree"]["gates"] if g["gate"] == "agreement_drop"}
    assert gated == set(GATED_SCORERS)

    with duckdb.connect(str(out / "shadowtap.duckdb"), read_only=True) as con:
        (exchanges,) = con.execute("SELECT count(*) FROM exchanges").fetchone() or (0,)
        targets = dict(con.execute("SELECT target, count(*) FROM responses GROUP BY 1").fetchall())
    assert exchanges == REQUESTS
    # The live candidates, and the one the demo's last step replayed the traffic to.
    live_and_replayed = (
        "primary",
        "secondary",
        "fast-agree",
        "anthropic-agree",
        "paraphrase",
        "tool-breaker",
        "flaky",
        "next-release",
    )
    assert targets == {name: REQUESTS for name in live_and_replayed}
    assert re.search(r"next-release — PASS — \d+ pairs \(\d+ replayed\)", output), output
    # The cross-provider candidate: every request was recorded, read in its API; the JSON-mode
    # requests without a schema (no Anthropic equivalent) were not sent and not judged.
    with duckdb.connect(str(out / "shadowtap.duckdb"), read_only=True) as con:
        not_sent = con.execute(
            "SELECT count(*), count(DISTINCT error) FROM responses"
            " WHERE target = 'anthropic-agree' AND status IS NULL AND error LIKE 'not sent:%'"
        ).fetchone()
        dialects = con.execute("SELECT DISTINCT dialect FROM exchanges").fetchall()
    assert not_sent is not None and not_sent[0] > 0 and not_sent[1] == 1
    assert dialects == [("openai-chat",)]
    assert report["anthropic-agree"]["pairs"] == REQUESTS - not_sent[0]
    assert f"shadowtap report --db {out / 'shadowtap.duckdb'}" in output
