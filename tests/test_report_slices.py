"""Where a candidate is brittle: slices, the `max_slice_drop` gate and per-slice reliability,
on known-truth traffic written through the real recorder (tests/report_data.py); the
slice headers' values stored by a real proxy, and nothing else of any header."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import duckdb
import pytest
from shadowtap.config import ConfigError, GatesConfig, parse_config
from shadowtap.report import build_report, open_db, render_text, report_json
from shadowtap.report.gates import Levels
from shadowtap.report.model import Report
from shadowtap.report.sequences import Moments, difference_sequence

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.report_data import IDENTICAL, NOISE, Behaviour, make_exchanges, write

# Identical to the primary on most requests (better than the noise floor's 0.9), but ~0.6 on
# the quarter of requests that declare tools: about the noise floor on average (a drop of
# -0.075 + 0.075), 0.3 under it on tool calls.
TOOL_BREAKER = Behaviour(agreement=None, tool_agreement=(6.0, 4.0))
BAD_TOOL_CALLS = Behaviour(tool_call="unknown_tool")
TENANTS = ("acme", "globex", "initech", "umbrella")


@pytest.fixture(scope="module")
def tools_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    candidates = {"tool-breaker": TOOL_BREAKER, "steady": NOISE, "bad-tools": BAD_TOOL_CALLS}
    exchanges = make_exchanges(
        480,
        candidates,
        seed=21,
        tools_every=4,
        slice_headers=lambda i: {"x-tenant": TENANTS[(i // 2) % 4]},  # not the tool requests
    )
    db = write(exchanges, tmp_path_factory.mktemp("slices") / "s.duckdb")
    gates = GatesConfig(max_invalid_tool_call_rate=0.1)
    return build_report(open_db(db), gates, slice_by=["header:x-tenant", "body:model"])


def gate(report: Report, candidate: str, name: str):  # type: ignore[no-untyped-def]
    return next(g for g in report.candidates[candidate].gates if g.gate == name)


def test_a_candidate_fine_on_average_but_broken_on_tool_calls_fails_the_slice_gate(
    tools_report: Report,
) -> None:
    breaker = tools_report.candidates["tool-breaker"]
    average = gate(tools_report, "tool-breaker", "agreement_drop")
    assert average.verdict == "pass", render_text(tools_report)
    assert average.value.estimate is not None and abs(average.value.estimate) < 0.02
    sliced = gate(tools_report, "tool-breaker", "slice_drop")
    assert sliced.verdict == "fail" and sliced.slice == "tools=yes"
    assert breaker.verdict == "fail"
    assert {g.gate for g in breaker.gates if g.verdict == "fail"} == {"slice_drop"}
    # Worst slice first, with the drop it was built with (0.9 - 0.6).
    worst = breaker.slices[0]
    assert worst.name == "tools=yes" and worst.pairs == 120
    drop = worst.drop["similarity"]
    assert drop.low is not None and drop.high is not None and drop.low < 0.3 < drop.high
    # A candidate without such a slice passes every gate, the slice gate included.
    steady = tools_report.candidates["steady"]
    assert steady.verdict == "pass", render_text(tools_report)
    assert gate(tools_report, "steady", "slice_drop").verdict == "pass"


def test_functional_reliability_per_candidate_and_per_slice(tools_report: Report) -> None:
    bad = tools_report.candidates["bad-tools"]
    # Every tool call of bad-tools names a tool the request never declared.
    invalid = bad.reliability["invalid_tool_call"]
    assert (invalid.estimate, invalid.n) == (1.0, 120)
    assert bad.reliability_primary["invalid_tool_call"].estimate == 0.0
    assert gate(tools_report, "bad-tools", "invalid_tool_call_rate").verdict == "fail"
    assert gate(tools_report, "steady", "invalid_tool_call_rate").verdict == "pass"
    tools_yes = next(row for row in bad.slices if row.name == "tools=yes")
    assert tools_yes.reliability["invalid_tool_call"].estimate == 1.0
    # Not applicable where no answer called a tool; nothing truncated, refused or empty.
    tools_no = next(row for row in bad.slices if row.name == "tools=no")
    assert tools_no.reliability["invalid_tool_call"].n == 0
    for check in ("empty", "truncated", "refused"):
        assert bad.reliability[check].estimate == 0.0 and bad.reliability[check].n == 480


def test_slices_by_header_and_body_field(tools_report: Report) -> None:
    names = {row.name for row in tools_report.candidates["steady"].slices}
    assert {f"header:x-tenant={t}" for t in TENANTS} <= names
    assert {"body:model=gpt-4o", "body:model=gpt-4o-mini"} <= names
    data = report_json(tools_report)["candidates"]["steady"]["slices"]
    tenant = next(s for s in data if s["value"] == "acme")
    assert tenant["dimension"] == "header:x-tenant" and tenant["pairs"] == 120


def test_slice_intervals_are_corrected_for_every_slice(tools_report: Report) -> None:
    breaker = tools_report.candidates["tool-breaker"]
    levels = Levels(breaker.levels["wrong_pass"], breaker.levels["wrong_fail"])
    shown = levels.split(len(breaker.slices))  # one agreement scorer
    row = breaker.slices[0]
    report_drop = row.drop["similarity"]
    # Rebuild the same interval from the stored facts: the noise floor's and the candidate's
    # scores on the tool requests, at the corrected levels.
    exchanges = make_exchanges(
        480,
        {"tool-breaker": TOOL_BREAKER, "steady": NOISE, "bad-tools": BAD_TOOL_CALLS},
        seed=21,
        tools_every=4,
    )
    noise, candidate = [], []
    for e in exchanges:
        if "tools" in (e.request_json or {}):
            for s in e.scores:
                if s.target == "secondary":
                    noise.append(s.score)
                elif s.target == "tool-breaker":
                    candidate.append(s.score)
    sequence = difference_sequence(
        Moments.of(noise), Moments.of(candidate), shown.wrong_fail, shown.wrong_pass
    )
    expected = sequence.interval()
    assert report_drop.low == pytest.approx(expected.low)
    assert report_drop.high == pytest.approx(expected.high)
    # The low end (a slice shown as surely worse) pays for the number of slices; the high end
    # (all must pass) does not.
    assert shown.wrong_fail < levels.wrong_fail and shown.wrong_pass == levels.wrong_pass


def test_the_slice_gate_waits_for_enough_pairs(tmp_path: Path) -> None:
    exchanges = make_exchanges(60, {"same": IDENTICAL}, seed=22)
    report = build_report(open_db(write(exchanges, tmp_path / "few.duckdb")), GatesConfig())
    sliced = gate(report, "same", "slice_drop")
    assert (sliced.verdict, sliced.reason) == ("insufficient", "too_few_pairs")
    assert sliced.more_pairs is not None and sliced.more_pairs > 0


@pytest.mark.parametrize(
    "spec",
    [
        "header:authorization",
        "header:X-Api-Key",
        "header:cookie",
        "header:x-session-id",
        "header:x-access-token",
        "body:metadata..feature",
        "body:",
        "query:tenant",
        "header:x tenant",
    ],
)
def test_slice_by_refuses_credentials_and_malformed_entries(spec: str) -> None:
    config = make_config("http://127.0.0.1:1", report={"slice_by": [spec]})
    with pytest.raises(ConfigError, match=r"report\.slice_by"):
        parse_config(config, {})


async def test_the_proxy_stores_the_slice_headers_values_and_no_other(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    db = tmp_path / "shadowtap.duckdb"
    server = await start_shadowtap(
        make_config(
            primary,
            {"c": candidate},
            storage={"enabled": True, "path": str(db), "flush_interval_ms": 20},
            report={"slice_by": ["header:x-tenant", "body:metadata.feature"]},
        )
    )
    secret = "sk-test-0123456789abcdefghijklmnop"
    opaque = "Q7m2pX9vR4tY8wK3nB6cF1hJ5dG0sAe4Lz"  # no credential shape: only known exactly
    headers = {
        "Authorization": f"Bearer {secret}",
        "X-Tenant": "acme-" + "x" * 500,  # cut to 128 characters
        "X-Other": "not stored",
    }
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
        async with session.post(url, json=body, headers=headers) as response:
            assert response.status == 200
            await response.read()
        # A client that puts its key in the sliced header gets it scrubbed, not stored.
        leaky = {"Authorization": f"Bearer {secret}", "X-Tenant": secret}
        async with session.post(url, json=body, headers=leaky) as response:
            await response.read()
        # Its key across the cut: scrubbed whole, then cut, never cut then missed by the scrub.
        straddling = {"Authorization": f"Bearer {opaque}", "X-Tenant": "t" * 100 + " " + opaque}
        async with session.post(url, json=body, headers=straddling) as response:
            await response.read()
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)
    await server.stop()
    con = duckdb.connect(str(db), read_only=True)
    stored = [
        row[0]
        for row in con.execute(
            "SELECT CAST(slice_headers AS VARCHAR) FROM exchanges ORDER BY request_id"
        ).fetchall()
    ]
    everything = str(con.execute("SELECT * FROM exchanges").fetchall())
    con.close()
    assert stored[0] == '{"x-tenant":"acme-' + "x" * 123 + '"}'
    assert secret not in stored[1] and "x-tenant" in stored[1]
    assert "not stored" not in everything and secret not in everything
    assert stored[2].startswith('{"x-tenant":"' + "t" * 100 + " ")
    assert not [opaque[i : i + 8] for i in range(len(opaque) - 7) if opaque[i : i + 8] in stored[2]]
    await asyncio.sleep(0)
