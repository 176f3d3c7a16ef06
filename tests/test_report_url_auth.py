"""`shadowtap report --url` against a real proxy whose admin API needs a token: the token comes
from the environment (never argv), is sent as a bearer token, and is never printed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import orjson
from shadowtap.server import ShadowtapServer

from tests.conftest import StartFake, StartShadowtap, make_config

SHADOWTAP = str(Path(sys.executable).parent / "shadowtap")
TOKEN = "rpt-7f3a9c1e5b2d4f6a8c0e1b3d5f7a9c2e"


async def report(url: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if k != "SHADOWTAP_ADMIN_TOKEN"}
    process = await asyncio.create_subprocess_exec(
        SHADOWTAP, "report", "--url", url, "--json", *args, stdout=-1, stderr=-1, env=clean | env
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def recorded_proxy(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> ShadowtapServer:
    primary, candidate = await start_fake("ok"), await start_fake("ok")
    config = make_config(
        primary,
        {"same": candidate},
        server={"admin_token": TOKEN},
        storage={"enabled": True, "path": str(tmp_path / "db.duckdb"), "flush_interval_ms": 20},
    )
    server = await start_shadowtap(config)
    async with aiohttp.ClientSession() as session:
        for i in range(3):
            body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
            url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
            async with session.post(url, json=body) as response:
                assert response.status == 200
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)
    assert server.recorder is not None
    for _ in range(200):
        if server.recorder.query("SELECT count(*) AS n FROM pairs")[0]["n"] == 3:
            break
        await asyncio.sleep(0.02)
    return server


async def test_report_url_reads_with_the_token_from_the_environment(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    server = await recorded_proxy(tmp_path, start_fake, start_shadowtap)
    url = f"http://127.0.0.1:{server.admin_port}"

    code, out, err = await report(url, env={"SHADOWTAP_ADMIN_TOKEN": TOKEN})
    assert code in (0, 1), err  # a verdict, whichever it is
    assert orjson.loads(out)["candidates"]["same"]["pairs"] == 3
    assert TOKEN not in out + err

    code, out, err = await report(
        url, "--token-env", "MY_ADMIN_TOKEN", env={"MY_ADMIN_TOKEN": TOKEN}
    )
    assert code in (0, 1), err
    assert orjson.loads(out)["candidates"]["same"]["pairs"] == 3


async def test_report_url_without_or_with_a_wrong_token_says_how_to_authenticate(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    server = await recorded_proxy(tmp_path, start_fake, start_shadowtap)
    url = f"http://127.0.0.1:{server.admin_port}"
    wrong = TOKEN[::-1]
    for env in ({}, {"SHADOWTAP_ADMIN_TOKEN": wrong}):
        code, out, err = await report(url, env=env)
        assert code == 2 and out == ""
        assert "HTTP 401" in err and "SHADOWTAP_ADMIN_TOKEN" in err and "--token-env" in err
        assert len(err.strip().splitlines()) == 1
        assert wrong not in err
    code, out, err = await report(url, "--token-env", "UNSET_ADMIN_TOKEN", env={})
    assert code == 2 and "UNSET_ADMIN_TOKEN is not set" in err


async def test_the_token_never_follows_a_redirect(aiohttp_server: object) -> None:
    from aiohttp import web

    seen: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"targets": {}})

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    app = web.Application()
    app.router.add_get("/api/summary", redirect)
    app.router.add_get("/elsewhere", elsewhere)
    server = await aiohttp_server(app)  # type: ignore[operator]
    code, _, err = await report(
        str(server.make_url("")).rstrip("/"), env={"SHADOWTAP_ADMIN_TOKEN": TOKEN}
    )
    assert code == 2 and "HTTP 302" in err
    assert seen == [] and TOKEN not in err
