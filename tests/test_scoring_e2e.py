"""Scoring through the running proxy: real fakes, the official client, DuckDB and metrics."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import openai
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap.recorder import open_readonly

from tests.conftest import StartFake, StartShadowtap, make_config

N = 40
SECONDARY_RATE = 0.5
ANSWERS = re.compile(r"## Answer A\n(.*)\n\n## Answer B\n(.*)", re.DOTALL)


async def start_judge(aiohttp_server: Any) -> str:
    """A judge that prefers the answer saying "forty-two", and calls equal answers a tie."""

    async def judge(request: web.Request) -> web.Response:
        prompt = (await request.json())["messages"][-1]["content"]
        found = ANSWERS.search(prompt)
        assert found is not None
        a, b = ("forty-two" in found.group(i) for i in (1, 2))
        winner = "tie" if a == b else ("A" if a else "B")
        reply = json.dumps({"winner": winner, "rationale": f"{winner}: the number matters"})
        return web.json_response({"choices": [{"message": {"content": reply}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", judge)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def start_broken_embeddings(aiohttp_server: Any) -> str:
    async def broken(_request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "down"}}, status=503)

    app = web.Application()
    app.router.add_post("/v1/embeddings", broken)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_scores_through_the_proxy_land_in_duckdb_and_metrics(
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    aiohttp_server: Any,
    tmp_path: Path,
) -> None:
    primary, same, para = await start_fake(), await start_fake(), await start_fake("paraphrase")
    judge_url = await start_judge(aiohttp_server)
    embeddings_url = await start_broken_embeddings(aiohttp_server)
    db = tmp_path / "shadowtap.duckdb"
    config = make_config(
        primary,
        {"same": same, "para": para},
        sampling={"max_inflight": 1000},
        secondary={"rate": SECONDARY_RATE},
        storage={"enabled": True, "path": str(db), "bodies": "full", "flush_interval_ms": 50},
        scorers={
            "similarity": {"type": "text_similarity"},
            "exact": {"type": "exact_match"},
            "judge": {
                "type": "llm_judge",
                "url": judge_url,
                "model": "judge",
                "api_key": "sk-judge-secret",
                "max_inflight": 1000,
                "max_per_second": 1000,
            },
            # A scorer whose every call raises (its endpoint answers 503).
            "meaning": {"type": "embedding_similarity", "url": embeddings_url, "model": "e"},
        },
    )
    registry = CollectorRegistry()
    server = await start_shadowtap(config, registry)
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.proxy_port}/v1", api_key="sk-client", max_retries=0
    )
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": f"question {i}"}]
            )
            for i in range(N)
        )
    )
    await client.close()
    assert all("forty-two" in r.choices[0].message.content for r in replies)  # type: ignore[operator]
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)
    await server.stop()  # flushes the recorder

    con = open_readonly(db)
    try:
        responses = dict(
            con.execute("SELECT target, count(*) FROM responses GROUP BY target").fetchall()
        )
        rows = con.execute(
            "SELECT target, scorer, score, detail, error, threshold FROM scores"
        ).fetchall()
    finally:
        con.close()

    # Every pair is recorded, the secondary at its configured rate.
    assert (responses["primary"], responses["same"], responses["para"]) == (N, N, N), responses
    secondaries = responses.get("secondary", 0)
    sigma = math.sqrt(N * SECONDARY_RATE * (1 - SECONDARY_RATE))
    assert abs(secondaries - N * SECONDARY_RATE) < 4.5 * sigma, secondaries

    def scores(target: str, scorer: str) -> list[float | None]:
        return [r[2] for r in rows if r[0] == target and r[1] == scorer]

    # A candidate answering like the primary agrees fully; a paraphrasing one clearly less.
    for scorer in ("similarity", "exact"):
        assert scores("same", scorer) == [1.0] * N
        assert scores("secondary", scorer) == [1.0] * secondaries
    paraphrased = scores("para", "similarity")
    assert len(paraphrased) == N and max(p for p in paraphrased if p is not None) < 0.6
    assert scores("para", "exact") == [0.0] * N

    # The judge's verdicts are stored, with rationales, and never its key.
    judged = {r[0]: [] for r in rows if r[1] == "judge"}
    for target, scorer, _score, detail, _error, _threshold in rows:
        if scorer == "judge":
            judged[target].append(json.loads(detail)["verdict"])
    assert judged["same"] == ["tie"] * N
    assert judged["para"] == ["primary_better"] * N
    assert scores("para", "judge") == [0.0] * N
    assert not any("sk-judge-secret" in str(r) for r in rows)

    # The raising scorer is counted, stored as an error, and the pairs are still there. (Equal
    # answers never reach the endpoint: embedding_similarity scores them 1.0 without a call.)
    failed = [r for r in rows if r[1] == "meaning" and r[0] == "para"]
    assert len(failed) == N
    assert all(r[2] is None and "answered HTTP 503" in r[4] for r in failed), failed[:3]
    assert scores("same", "meaning") == [1.0] * N

    def metric(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert metric("shadowtap_scorer_errors_total", scorer="meaning") == N
    assert metric("shadowtap_agreement_score_count", target="same", scorer="similarity") == N
    assert metric("shadowtap_disagreements_total", target="para", scorer="similarity") == N
    assert metric("shadowtap_disagreements_total", target="same", scorer="exact") is None
    assert all(r[5] == 0.8 for r in rows)
