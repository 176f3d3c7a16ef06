"""Through the running proxy into the file: every shadowed request is stored, failures as rows."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from shadowtap.recorder import open_readonly

from tests.conftest import StartFake, StartShadowtap, make_config

N = 24
CANARY_KEY = "sk-proj-E2ECANARY0123456789abcdefgh"
CANARY_MAIL = "e2e.canary@example.org"


async def post(port: int, i: int) -> bytes:
    body = {
        "model": "gpt-test",
        "stream": i % 2 == 0,
        "messages": [{"role": "user", "content": f"Question {i}. Reach me at {CANARY_MAIL}."}],
    }
    headers = {"Authorization": f"Bearer {CANARY_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.status == 200
        return await response.read()


async def test_mixed_traffic_is_stored_with_failures_as_rows(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> None:
    primary, good = await start_fake(), await start_fake()
    broken, hung = await start_fake("error500"), await start_fake("hang")
    db = tmp_path / "shadowtap.duckdb"
    config = make_config(
        primary,
        {"good": good, "broken": broken, "hung": {"url": hung.url, "timeout_s": 0.3}},
        sampling={"max_inflight": 1000},
        storage={"enabled": True, "path": str(db), "flush_interval_ms": 50},  # bodies: redacted
    )
    server = await start_shadowtap(config)
    for i in range(N):  # sequential: the fakes' request order is the client's
        await post(server.proxy_port, i)
    await server.stop()  # drains shadows and scoring, then closes the recorder

    con = open_readonly(db)
    assert con.execute("SELECT count(*), count(*) FILTER (stream) FROM exchanges").fetchall() == [
        (len(primary.chat_requests()), N // 2)
    ]
    per_target = dict(
        con.execute("SELECT target, count(*) FROM responses GROUP BY target").fetchall()
    )
    assert per_target == {
        "primary": N,
        "good": len(good.chat_requests()),
        "broken": len(broken.chat_requests()),
        "hung": len(hung.chat_requests()),
    }
    assert set(per_target.values()) == {N}
    outcomes = con.execute(
        "SELECT target, candidate_status, candidate_error IS NOT NULL, "
        "candidate_text IS NOT NULL, count(*) FROM pairs GROUP BY ALL ORDER BY target"
    ).fetchall()
    assert outcomes == [
        ("broken", 500, True, False, N),
        ("good", 200, False, True, N),
        ("hung", None, True, False, N),
    ]
    hung_errors = con.execute(
        "SELECT DISTINCT error FROM responses WHERE target = 'hung'"
    ).fetchall()
    assert hung_errors == [("timed out after 0.3s",)]
    # Streamed answers were reassembled: text and a time to first token for each side.
    streamed = con.execute(
        "SELECT count(*) FROM pairs WHERE stream AND target = 'good' "
        "AND candidate_ttft_ms > 0 AND primary_ttft_ms > 0 AND candidate_text = primary_text"
    ).fetchall()
    assert streamed == [(N // 2,)]
    # Header names only, and the client's key and e-mail are nowhere in what was stored.
    names = con.execute("SELECT header_names FROM exchanges LIMIT 1").fetchall()[0][0]
    assert all(name.islower() and " " not in name for name in names), names
    body = con.execute("SELECT request_body FROM exchanges LIMIT 1").fetchall()[0][0]
    assert "[REDACTED:email]" in body
    con.close()
    raw = db.read_bytes()
    assert CANARY_KEY.encode() not in raw and CANARY_MAIL.encode() not in raw
    assert b"[REDACTED:email]" in raw  # the scan does see stored text
