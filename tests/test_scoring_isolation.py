"""No scorer can freeze the proxy: hostile schemas and misbehaving plug-ins, through a real
proxy on loopback with real scoring workers, fake upstreams and DuckDB."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from shadowtap.recorder import open_readonly
from shadowtap.server import ShadowtapServer

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.fakes import chat_json
from tests.scorer_plugins import registered

# Exponential for a backtracking engine: 30 `a` already take Python's `re` minutes, 5000 forever.
EVIL = "^(a+)+$"
EVIL_ANSWER = json.dumps({"v": "a" * 5000 + "!"})
SCHEMA = {"type": "object", "properties": {"v": {"type": "string", "pattern": EVIL}}}


async def start_json_model(aiohttp_server: Any, text: str) -> str:
    """An upstream that answers every chat completion with `text`."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(chat_json(json.loads(body), text, body))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def chat(port: int, content: str, **extra: Any) -> dict[str, Any]:
    payload = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=payload
        ) as response:
            assert response.status == 200
            return dict(await response.json())


async def metric(server: ShadowtapServer, name: str, **labels: str) -> float | None:
    """A sample as /metrics serves it (the real exposition, over HTTP)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.admin_port}/metrics") as response:
            text = await response.text()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def settle(server: ShadowtapServer) -> None:
    await server.shadow_tasks.wait(30)
    await server.exchange_tasks.wait(30)


async def test_a_catastrophic_client_regex_does_not_stall_other_clients(
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    aiohttp_server: Any,
    tmp_path: Path,
) -> None:
    evil = await start_json_model(aiohttp_server, EVIL_ANSWER)
    db = tmp_path / "shadowtap.duckdb"
    config = make_config(
        evil,
        {"cand": evil},
        storage={"enabled": True, "path": str(db), "flush_interval_ms": 50},
        scorers={"schema": {"type": "json_schema_valid"}},
    )
    server = await start_shadowtap(config)
    response_format = {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}
    answer = await chat(server.proxy_port, "evil", response_format=response_format)
    assert answer["choices"][0]["message"]["content"] == EVIL_ANSWER
    # Meanwhile the schema is being judged: other clients' requests go on being answered.
    for index in range(10):
        other = await asyncio.wait_for(chat(server.proxy_port, f"unrelated {index}"), 10)
        assert "forty-two" not in json.dumps(other)  # the evil upstream's answer, relayed
        await asyncio.sleep(0.05)
    await settle(server)
    await server.stop()

    con = open_readonly(db)
    try:
        rows = con.execute(
            "SELECT s.target, s.score, s.detail, s.error FROM scores s JOIN exchanges e "
            "USING (request_id) WHERE e.request_body LIKE '%evil%' ORDER BY s.target"
        ).fetchall()
    finally:
        con.close()
    assert [(target, score, error) for target, score, _, error in rows] == [
        ("cand", 0.0, None),
        ("primary", 0.0, None),
    ]
    detail = json.loads(rows[0][2])  # judged (by RE2), not skipped: the string fails the pattern
    assert detail["valid"] is False and detail["path"] == "$.v"


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with registered(tmp_path / "plugins", monkeypatch):
        yield


async def hostile_proxy(start_fake: StartFake, start_shadowtap: StartShadowtap) -> ShadowtapServer:
    primary, candidate = await start_fake(), await start_fake()
    config = make_config(
        primary,
        {"cand": candidate},
        server={"scoring_processes": 1, "scoring_timeout_s": 0.5},
        scorers={"hostile": {"type": "hostile"}},
    )
    server = await start_shadowtap(config)
    seen: list[Any] = []

    class Sink:
        def record(self, exchange: Any) -> bool:
            seen.append(exchange)
            return True

    server.handler.pipeline.sinks.append(Sink())
    server.seen = seen  # type: ignore[attr-defined]
    return server


async def scored(server: ShadowtapServer, question: str) -> Any:
    """Ask through the proxy (the fakes quote the question in their answers); the score."""
    await chat(server.proxy_port, question)
    await settle(server)
    (score,) = server.seen.pop().scores  # type: ignore[attr-defined]
    return score


@pytest.mark.usefixtures("plugins")
@pytest.mark.parametrize(
    ("question", "error"),
    [
        ("please spin", "TimeoutError: timed out after 0.5 s"),
        ("please exit", "WorkerDied: scoring worker process died (exit code 7)"),
        ("please segv", "WorkerDied: scoring worker process died (exit code -11)"),
    ],
    ids=["endless-loop", "exit", "segfault"],
)
async def test_a_stuck_or_crashing_scorer_is_cut_off_counted_and_replaced(
    start_fake: StartFake, start_shadowtap: StartShadowtap, question: str, error: str
) -> None:
    server = await hostile_proxy(start_fake, start_shadowtap)
    first = await scored(server, "hello")
    assert first.score == 1.0
    failed = await scored(server, question)
    assert (failed.score, failed.error) == (None, error)
    assert await metric(server, "shadowtap_scorer_errors_total", scorer="hostile") == 1.0
    # The next exchange is scored, by the worker that replaced the one that was lost.
    after = await scored(server, "hello again")
    assert after.score == 1.0 and after.error is None
    assert after.detail["pid"] != first.detail["pid"]
    assert await metric(server, "shadowtap_scorer_errors_total", scorer="hostile") == 1.0
