"""The admin listener: /metrics, /healthz and /readyz open; /api/* behind a bearer token, denied
when none is configured; /readyz stays 200 whatever recording's state, with the detail."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from shadowtap.config import ConfigError, masked, parse_config
from shadowtap.server import ShadowtapServer

from tests.conftest import StartFake, StartShadowtap, make_config

TOKEN = "adm-0123456789abcdef0123456789abcdef"


def storing(tmp_path: Path, primary: Any, **server: Any) -> dict[str, Any]:
    return make_config(
        primary,
        server=server,
        storage={"enabled": True, "path": str(tmp_path / "db.duckdb"), "flush_interval_ms": 20},
    )


async def get(server: ShadowtapServer, path: str, **headers: str) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.admin_port}{path}", headers=headers) as response,
    ):
        body = await response.read()
        kind = response.headers.get("Content-Type", "")
        data = await response.json() if kind.startswith("application/json") else body
        return response.status, data, response.headers


async def raw_get(port: int, target: str) -> bytes:
    """A request line sent as written (no client-side normalization of the path)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return status_line


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_probe_and_metrics_paths_stay_open(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap, path: str
) -> None:
    server = await start_shadowtap(storing(tmp_path, await start_fake(), admin_token=TOKEN))
    status, _, _ = await get(server, path)
    assert status == 200


async def test_without_a_token_configured_the_api_is_refused_and_says_how_to_open_it(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    server = await start_shadowtap(storing(tmp_path, await start_fake()))
    for path in ("/api/pairs", "/api/summary", "/api/nothing-here", "/anything"):
        status, body, _ = await get(server, path, Authorization=f"Bearer {TOKEN}")
        assert status == 403, path
        assert "server.admin_token" in body["error"] and "SHADOWTAP_ADMIN_TOKEN" in body["error"]
    # Spellings a router might read differently from a path check never reach the data.
    for target in ("/api%2Fpairs", "//api/pairs", "/metrics/../api/pairs", "/./api/summary"):
        assert b" 200 " not in await raw_get(server.admin_port, target), target


async def test_the_api_needs_the_configured_bearer_token(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    server = await start_shadowtap(storing(tmp_path, await start_fake(), admin_token=TOKEN))
    status, body, headers = await get(server, "/api/pairs")
    assert status == 401 and "Authorization: Bearer" in body["error"]
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    for wrong in (
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        "Bearer ",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN.upper()}",
    ):
        status, body, headers = await get(server, "/api/pairs", Authorization=wrong)
        assert status == 401, wrong
        assert TOKEN not in str(body) and TOKEN not in str(dict(headers))
    status, body, _ = await get(server, "/api/pairs", Authorization=f"Bearer {TOKEN}")
    assert status == 200 and body["pairs"] == []
    status, body, _ = await get(server, "/api/summary", Authorization=f"bearer  {TOKEN}")
    assert status == 200 and body == {"targets": {}}


async def test_an_explicit_loopback_opt_in_opens_the_api_without_a_token(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    config = storing(tmp_path, await start_fake(), admin_api_open_on_loopback=True)
    server = await start_shadowtap(config)
    status, body, _ = await get(server, "/api/summary")
    assert status == 200 and body == {"targets": {}}


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"admin_token": "short-token"}, "server.admin_token: must be at least 16 characters"),
        ({"admin_token": "a token with spaces inside"}, "server.admin_token: must be visible"),
        ({"admin_token": ""}, "server.admin_token: must be at least 16 characters"),
        (
            {"admin_api_open_on_loopback": True, "admin_listen": "0.0.0.0:0"},
            "needs a loopback admin_listen",
        ),
        (
            {"admin_api_open_on_loopback": True, "admin_token": TOKEN},
            "set admin_token or admin_api_open_on_loopback, not both",
        ),
    ],
)
def test_weak_or_contradictory_admin_settings_stop_the_start(
    server: dict[str, Any], message: str
) -> None:
    config = make_config("http://127.0.0.1:9", server=server)
    with pytest.raises(ConfigError, match="config error: server") as error:
        parse_config(config, {})
    assert message in str(error.value)
    assert "spaces inside" not in str(error.value) and "short-token" not in str(error.value)


def test_the_token_comes_from_the_environment_and_is_never_shown() -> None:
    config = make_config("http://127.0.0.1:9", server={"admin_token": "${SHADOWTAP_ADMIN_TOKEN}"})
    parsed = parse_config(config, {"SHADOWTAP_ADMIN_TOKEN": TOKEN})
    assert parsed.server.admin_token is not None
    assert parsed.server.admin_token.get_secret_value() == TOKEN
    assert TOKEN not in str(masked(parsed)) and TOKEN not in repr(parsed)
    with pytest.raises(ConfigError, match="SHADOWTAP_ADMIN_TOKEN is not set"):
        parse_config(config, {})


async def test_readyz_reports_recording_and_stays_ready_when_recording_stops(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    server = await start_shadowtap(storing(tmp_path, primary))
    status, body, _ = await get(server, "/readyz")
    assert (status, body) == (200, {"status": "ready", "recording": "ok"})
    # The writer goes away while the proxy serves: readiness stays (the application's pod must
    # keep its traffic), and the body says what is wrong.
    server.recorder.close()
    status, body, _ = await get(server, "/readyz")
    assert status == 200 and body["status"] == "ready" and body["recording"] != "ok"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        ) as response,
    ):
        assert response.status == 200

    unrecorded = await start_shadowtap(make_config(primary))
    status, body, _ = await get(unrecorded, "/readyz")
    assert (status, body) == (200, {"status": "ready", "recording": "off"})
