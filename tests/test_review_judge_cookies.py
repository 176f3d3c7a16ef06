"""The LLM judges' session of a replay keeps no cookie jar either: a `Set-Cookie` in one
judge's answer never rides on a later judge request (the live sessions:
tests/test_proxy_passthrough.py; the candidate's replay session: tests/test_replay_cookies.py).
The judge is reached as `localhost`, since a cookie jar refuses cookies from a bare IP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.fakes import chat_json
from tests.replaying import record_synthetic, synthetic_replay_config


class CookieJudge:
    """A judge that calls it a tie and sets a new session cookie on each answer."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.cookies.append(request.headers.get("Cookie"))
        reply = {"winner": "tie", "rationale": "same"}
        answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]}
        answer["choices"][0]["message"]["content"] = orjson.dumps(reply).decode()
        response = web.json_response(answer)
        response.set_cookie("session", f"judge-{len(self.cookies)}-secret", path="/")
        return response


async def candidate(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(chat_json(orjson.loads(body), "Paris.", body))


async def test_a_replay_judge_never_gets_back_a_cookie_it_set(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    judge = CookieJudge()
    judge_app = web.Application()
    judge_app.router.add_post("/v1/chat/completions", judge.handle)
    judge_server = await aiohttp_server(judge_app)
    candidate_app = web.Application()
    candidate_app.router.add_post("/v1/chat/completions", candidate)
    candidate_server = await aiohttp_server(candidate_app)
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, 4)
    scorers = {
        "judge": {
            "type": "llm_judge",
            "url": f"http://localhost:{judge_server.port}",
            "model": "judge-1",
            # Every pair judged, none skipped over the judge's budget.
            "max_per_second": 1000.0,
            "max_inflight": 100,
        }
    }
    config = synthetic_replay_config(str(candidate_server.make_url("")), db, scorers=scorers)
    runner = ReplayRunner(config, ReplayOptions("new", concurrency=1, progress=False), db)
    summary = await runner.run()
    assert summary.recorded == 4
    assert len(judge.cookies) == 8  # two orders per pair
    assert judge.cookies == [None] * 8
