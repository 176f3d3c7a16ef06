"""Review of scoring parsing the sampled request on the event loop only for an I/O scorer
(pipeline.score, scorers/runner.py): with an llm_judge and CPU scorers on one sampled request,
the judge still gets the request parsed, a CPU scorer that reads the request gets it (parsed in
its worker), one that says `reads_request = False` gets none, and the recorder stores the
request whole once scoring dropped its parse. The proxy, its fakes and a judge are real
servers on loopback; the plug-ins are registered by entry point, as a user's would be."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from shadowtap.recorder import open_readonly
from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import post, start_tie_judge


class Reads(CpuScorer[ScorerOptions]):
    """Says what request it was given (a plug-in reads the request unless it says otherwise)."""

    def score(self, pair: Pair) -> Result:
        return Verdict(1.0, {"request": pair.request})


class Blind(CpuScorer[ScorerOptions]):
    reads_request = False

    def score(self, pair: Pair) -> Result:
        return Verdict(1.0, {"request": pair.request})


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "plugins" / "shadowtap_review_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shadowtap-review-plugins\n")
    (dist / "entry_points.txt").write_text(
        f"[shadowtap.scorers]\nreview_reads = {__name__}:Reads\nreview_blind = {__name__}:Blind\n"
    )
    monkeypatch.syspath_prepend(str(dist.parent))
    importlib.invalidate_caches()


async def test_a_judge_and_cpu_scorers_together_each_get_what_they_read(
    plugins: None,
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    aiohttp_server: Any,
    tmp_path: Path,
) -> None:
    asked: list[bytes] = []
    primary, candidate = await start_fake(), await start_fake()
    scorers = {
        "judge": {
            "type": "llm_judge",
            "url": await start_tie_judge(aiohttp_server, asked),
            "model": "judge",
        },
        "reads": {"type": "review_reads"},
        "blind": {"type": "review_blind"},
        "similarity": {"type": "text_similarity"},
    }
    db = tmp_path / "scoring.duckdb"
    config = make_config(
        primary,
        {"small": candidate},
        scorers=scorers,
        server={"scoring_processes": 1},
        storage={"enabled": True, "path": str(db), "flush_interval_ms": 50},
    )
    server = await start_shadowtap(config)
    question = "the marmot question " + "é" * 2000
    body = {"model": "m", "messages": [{"role": "user", "content": question}]}
    assert (await post(server.proxy_port, body))[0] == 200
    await server.shadow_tasks.wait(30)
    await server.exchange_tasks.wait(60)
    await server.stop()
    con = open_readonly(db)
    try:
        scores = {
            name: (score, error, detail)
            for name, score, error, detail in con.execute(
                "SELECT scorer, score, error, detail FROM scores WHERE target = 'small'"
            ).fetchall()
        }
        [(stored_body,)] = con.execute("SELECT request_body FROM exchanges").fetchall()
    finally:
        con.close()
    assert set(scores) == {"judge", "reads", "blind", "similarity"}
    assert all(error is None for _, error, _ in scores.values()), scores
    assert scores["judge"][0] is not None  # the judge was asked, with the user's question
    assert asked and any(b"the marmot question" in ask for ask in asked)
    assert orjson.loads(scores["reads"][2]) == {"request": body}  # parsed in its worker
    assert orjson.loads(scores["blind"][2]) == {"request": None}  # never sent
    assert orjson.loads(stored_body) == body  # stored whole after scoring dropped its parse
