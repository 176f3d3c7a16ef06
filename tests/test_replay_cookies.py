"""A candidate's cookies stay with the answer that set them: the replay's session keeps no
cookie jar, so no replayed request carries a cookie the candidate set on an earlier one (the
live sessions: tests/test_proxy_passthrough.py). A fake candidate on loopback, reached as
`localhost` (a cookie jar refuses cookies from a bare IP address, so that would prove
nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.fakes import chat_json
from tests.replaying import record_synthetic, synthetic_replay_config


class CookieSetter:
    """Answers every chat request and sets a new session cookie on each answer."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.cookies.append(request.headers.get("Cookie"))
        response = web.json_response(chat_json(orjson.loads(body), "Paris.", body))
        response.set_cookie("session", f"tenant-{len(self.cookies)}-secret", path="/")
        return response


async def serve_on_localhost(aiohttp_server: Any, candidate: CookieSetter) -> str:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", candidate.handle)
    server = await aiohttp_server(app)
    return f"http://localhost:{server.port}"


async def test_a_replay_never_sends_back_a_cookie_the_candidate_set(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    candidate = CookieSetter()
    url = await serve_on_localhost(aiohttp_server, candidate)
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, 4)
    config = synthetic_replay_config(url, db, scorers={})
    runner = ReplayRunner(config, ReplayOptions("new", concurrency=1, progress=False), db)
    summary = await runner.run()
    assert summary.recorded == 4
    assert candidate.cookies == [None] * 4
