"""Shared fixtures: fake upstream models and an in-process shadowtap, all on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop
from hypothesis import settings
from prometheus_client import CollectorRegistry
from shadowtap.config import parse_config
from shadowtap.server import ShadowtapServer

from tests.fakes import FakeModel

# CI runs the same examples every time, so a red build reproduces; local runs keep exploring.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# `make check` (the edit loop) skips the tests marked `slow`; `make test` (CI) runs everything.
# A module is slow as a whole when it is listed here, with the reason; a single test can carry
# `@pytest.mark.slow` itself. Slow means: it starts programs or processes of its own (shadowtap
# serve, the demo, pip, promtool, Chromium, hadolint, yamllint, scorer worker processes), or it
# waits out real time by design (pacing over a window, a kill deadline), or computes for
# seconds on purpose (statistical simulations, full reports over hundreds of generated pairs).
SLOW_MODULES: dict[str, str] = {
    "test_bench_tools": "generates fleet-size Parquet layouts and runs the bench tools",
    "test_cli": "runs `shadowtap serve` and other commands as programs",
    "test_dashboards": "runs promtool on every dashboard query",
    "test_demo_e2e": "runs the demo",
    "test_demo_profiles": "measures the simulated models' rates over hundreds of requests",
    "test_demo_traffic": "drives the demo's traffic at a set rate for seconds",
    "test_deploy_compose": "runs check-jsonschema and the compose commands",
    "test_deploy_dockerfile": "runs hadolint",
    "test_deploy_image": "installs the image's contents with pip and runs them",
    "test_deploy_kustomize": "runs kubectl kustomize (when installed)",
    "test_deploy_yaml": "runs yamllint",
    "test_export": "replays through scorer worker processes before it exports",
    "test_listener": "waits out header, body and idle timeouts (0.5-1 s a test), on two loops",
    "test_metrics": "runs promtool check metrics",
    "test_metrics_endpoint": "runs promtool check metrics",
    "test_packaging": "builds the wheel with pip",
    "test_prometheus_dashboards": "runs a real Prometheus",
    "test_prometheus_rules": "runs promtool",
    "test_recorder_crash": "signals and kills a recording child process",
    "test_recorder_faults": "runs `shadowtap serve` as a program",
    "test_recorder_fleet": "runs three `shadowtap serve` processes",
    "test_recorder_memory": "writes multi-MB rows against DuckDB's memory limit (seconds a test)",
    "test_replay_claims": "runs `shadowtap replay` as a program",
    "test_replay_e2e": "runs a replay with scorer worker processes",
    "test_replay_dialects": "runs a replay with scorer worker processes",
    "test_report_stats": "checks interval coverage over hundreds of simulated samples",
    "test_replay_limits": "replays at a set rate over a window, with scorer worker processes",
    "test_replay_resume": "kills a `shadowtap replay` process",
    "test_replay_source": "replays with scorer worker processes",
    "test_replay_store_first": "replays with scorer worker processes",
    "test_replay_parquet": "replays with scorer worker processes, runs `shadowtap report`",
    "test_report_cli": "runs the `shadowtap` console script",
    "test_report_evidence": "full reports (latency bootstraps) over hundreds of generated pairs",
    "test_report_html": "runs headless Chromium",
    "test_report_peeking": "simulates hundreds of daily-peeking runs per gate",
    "test_report_sources": "runs `shadowtap report --url` as a program",
    "test_report_url_auth": "runs `shadowtap report --url` as a program",
    "test_report_verdicts": "full reports (latency bootstraps) over 400 pairs and 6 candidates",
    "test_scorers_pool": "starts, kills and crashes scorer worker processes",
    "test_scorers_pool_batch": "starts, kills and crashes scorer worker processes",
    "test_scorers_registry": "installs a plug-in with pip",
    "test_scorers_runner": "scores in worker processes",
    "test_scoring_e2e": "scores in worker processes",
    "test_scoring_isolation": "kills stuck and crashing scorer worker processes",
    "test_shadow_bounds": "streams endless candidates at set byte rates until their timeouts",
    "test_shutdown": "sends SIGTERM to `shadowtap serve` under a kill deadline",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


StartFake = Callable[..., Awaitable[FakeModel]]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's loop for every test; a test marked
    `pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])` runs on uvloop too, the loop
    `shadowtap serve` runs on (its transports differ from asyncio's)."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    marker = item.get_closest_marker("asyncio")
    if marker is not None and "uvloop" in marker.kwargs.get("loop_factories", ()):
        factories["uvloop"] = uvloop.new_event_loop
    return factories


StartShadowtap = Callable[..., Awaitable[ShadowtapServer]]


def make_config(
    primary: FakeModel | str,
    candidates: dict[str, FakeModel | str | dict[str, Any]] | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A config table for tests: ephemeral ports, storage off unless a test turns it on."""

    def url(target: FakeModel | str) -> str:
        return target.url if isinstance(target, FakeModel) else target

    tables: dict[str, Any] = {}
    for name, spec in (candidates or {}).items():
        tables[name] = dict(spec) if isinstance(spec, dict) else {"url": url(spec)}
    config: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"},
        "primary": {"url": url(primary)},
        "sampling": {"rate": 1.0, "max_per_second": 0},
        "candidates": tables,
        "storage": {"enabled": False},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return config


@pytest.fixture
async def start_fake(aiohttp_server: Any) -> StartFake:
    async def start(behaviour: str = "ok", **options: Any) -> FakeModel:
        fake = FakeModel(behaviour, **options)
        server = await aiohttp_server(fake.app())
        fake.url = str(server.make_url("")).rstrip("/")
        return fake

    return start


@pytest.fixture
async def start_shadowtap() -> AsyncIterator[StartShadowtap]:
    servers: list[ShadowtapServer] = []

    async def start(
        config: dict[str, Any], registry: CollectorRegistry | None = None
    ) -> ShadowtapServer:
        server = ShadowtapServer(parse_config(config, {}), registry or CollectorRegistry())
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
