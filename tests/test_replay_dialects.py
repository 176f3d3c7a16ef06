"""Replay to a candidate on another provider's API: recorded OpenAI-chat traffic is translated
into the candidate's API, sent to that API's path with its headers, and its answers read in
that API, exactly as live shadowing does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.conftest import StartFake, StartShadowtap
from tests.dialect_fakes import FakeProvider, serve
from tests.replaying import prompt, record_traffic, replay_config

N = 6


def stored(db: Path, target: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db))
    try:
        return con.execute(
            "SELECT status, error, text FROM responses WHERE target = ? ORDER BY request_id",
            [target],
        ).fetchall()
    finally:
        con.close()


async def test_a_replay_to_an_anthropic_candidate_sends_translated_requests(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    primary = await record_traffic(start_fake, start_shadowtap, db, N)
    claude = await serve(aiohttp_server, FakeProvider())
    candidate = {
        "url": claude.url,
        "dialect": "anthropic-messages",
        "model": "claude-test",
        "max_tokens": 512,
        "api_key": "sk-ant-candidate-key-0001",
    }
    config = replay_config(primary, {"claude": candidate})
    summary = await ReplayRunner(config, ReplayOptions("claude", progress=False), db).run()

    assert summary.complete and summary.counts.answered == N
    sent = claude.requests("/v1/messages")
    assert len(sent) == N and len(claude.received) == N  # nothing at the chat path
    asked = set()
    for request in sent:
        body = orjson.loads(request.body)
        assert body["model"] == "claude-test" and body["max_tokens"] == 512
        assert "messages" in body and "choices" not in body
        content = body["messages"][-1]["content"]
        asked.add(content if isinstance(content, str) else content[0]["text"])
        assert request.headers.get("anthropic-version")
        assert "sk-ant-candidate-key-0001" in (
            request.headers.get("x-api-key", "") + request.headers.get("Authorization", "")
        )
    assert asked == {prompt(i) for i in range(N)}
    rows = stored(db, "claude")
    assert len(rows) == N
    assert all(status == 200 and error is None and text for status, error, text in rows)
