"""The `shadowtap` console script, run as a user runs it: a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import StartFake
from tests.waiting import eventually

SHADOWTAP = str(Path(sys.executable).parent / "shadowtap")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_until_ready(session: aiohttp.ClientSession, admin_port: int) -> None:
    for _ in range(100):
        try:
            async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as ready:
                if ready.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("shadowtap did not become ready")


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        SHADOWTAP, *args, stdout=-1, stderr=-1, env={**os.environ, **(env or {})}
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_check_config_prints_the_resolved_config_with_secrets_masked(tmp_path: Path) -> None:
    path = tmp_path / "shadowtap.toml"
    path.write_text(
        '[primary]\nurl = "https://api.openai.com"\n'
        '[candidates.small]\nurl = "http://127.0.0.1:8001"\napi_key = "${SMALL_KEY}"\n'
    )
    code, out, _ = await run("check-config", "--config", str(path), env={"SMALL_KEY": "sk-abc123"})
    assert code == 0
    shown = orjson.loads(out)
    assert shown["candidates"]["small"]["api_key"] == "**********"
    assert "sk-abc123" not in out
    assert shown["sampling"]["rate"] == 0.05  # defaults are resolved and shown


async def test_bad_config_stops_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "shadowtap.toml"
    path.write_text('[primary]\nurl = "https://api.openai.com"\n[sampling]\nrate = 3\n')
    for command in ("check-config", "serve"):
        code, out, err = await run(command, "--config", str(path))
        assert code == 2 and out == ""
        assert err.strip().startswith("shadowtap: config error: sampling.rate:")
        assert len(err.strip().splitlines()) == 1


async def test_serve_finishes_in_flight_requests_on_sigterm_and_exits_0(
    tmp_path: Path, start_fake: StartFake
) -> None:
    primary = await start_fake("slow", delay_s=1.0)
    port, admin = free_port(), free_port()
    path = tmp_path / "shadowtap.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
        f'[primary]\nurl = "{primary.url}"\n[storage]\nenabled = false\n'
    )
    process = await asyncio.create_subprocess_exec(
        SHADOWTAP, "serve", "--config", str(path), stdout=-1, stderr=-1
    )
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(session, admin)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        pending = asyncio.ensure_future(
            session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
        )
        await eventually(lambda: primary.received)  # the request waits on the slow primary
        process.send_signal(signal.SIGTERM)
        response = await pending
        assert response.status == 200
        assert "forty-two" in (await response.json())["choices"][0]["message"]["content"]
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0
    events = [orjson.loads(line)["event"] for line in err.decode().splitlines()]
    assert events[0] == "started" and events[-1] == "stopped"


async def test_keys_never_reach_the_logs(tmp_path: Path, start_fake: StartFake) -> None:
    primary, candidate = await start_fake(), await start_fake("reject_key")
    port, admin = free_port(), free_port()
    path = tmp_path / "shadowtap.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
        'log_level = "debug"\n'
        f'[primary]\nurl = "{primary.url}"\n[sampling]\nrate = 1.0\n'
        f'[candidates.c]\nurl = "{candidate.url}"\napi_key = "${{CANARY_KEY}}"\n'
        f'[storage]\npath = "{tmp_path / "db.duckdb"}"\n'
    )
    candidate_key = "sk-candidatecanary0123456789abcdef"
    client_key = "sk-clientcanary0123456789abcdefgh"
    process = await asyncio.create_subprocess_exec(
        SHADOWTAP,
        "serve",
        "--config",
        str(path),
        stdout=-1,
        stderr=-1,
        env={**os.environ, "CANARY_KEY": candidate_key},
    )
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(session, admin)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {client_key}"},
        ) as response:
            assert response.status == 200
    for _ in range(50):
        if candidate.chat_requests():
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), 20)
    logs = (out + err).decode()
    shadows = [orjson.loads(line) for line in err.decode().splitlines() if '"shadow"' in line]
    assert shadows and shadows[0]["outcome"] == "error" and shadows[0]["status"] == 401
    assert shadows[0]["failed"] is True and "error" not in shadows[0]  # upstream text stays out
    assert candidate_key not in logs and client_key not in logs


def lower_open_file_limit() -> None:
    """In the child before exec: a soft limit of 1,024 under a hard one of 2,048."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2048))


async def test_serve_raises_the_open_file_limit_and_fits_its_connection_caps(
    tmp_path: Path, start_fake: StartFake
) -> None:
    primary = await start_fake()
    port, admin = free_port(), free_port()
    path = tmp_path / "shadowtap.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
        f'[primary]\nurl = "{primary.url}"\n[storage]\nenabled = false\n'
    )
    process = await asyncio.create_subprocess_exec(
        SHADOWTAP,
        "serve",
        "--config",
        str(path),
        stdout=-1,
        stderr=-1,
        preexec_fn=lower_open_file_limit,
    )
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(session, admin)
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 20)
    lines = {entry["event"]: entry for entry in map(orjson.loads, err.decode().splitlines())}
    started = lines["started"]
    assert started["open_file_limit"] == 2048  # raised from 1,024 to the hard limit
    # 4,096 proxy connections (two descriptors each) cannot fit in 2,048: the cap is lowered,
    # leaving the admin listener its own 64, and the log says so.
    assert started["max_connections"] < 1024
    lowered = lines["connection_cap_lowered"]
    assert lowered["configured"] == 4096 and lowered["effective"] == started["max_connections"]
