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

# Test modules that start programs of their own (shadowtap serve, the demo, pip, promtool,
# Chromium, hadolint, yamllint) are `slow`: `make check` skips them for a fast edit loop, and
# `make test` (CI) runs everything.
SLOW_MODULES = frozenset(
    {
        "test_cli",
        "test_dashboards",
        "test_demo_e2e",
        "test_deploy_compose",
        "test_deploy_dockerfile",
        "test_deploy_image",
        "test_deploy_kustomize",
        "test_deploy_yaml",
        "test_metrics",
        "test_metrics_endpoint",
        "test_packaging",
        "test_prometheus_dashboards",
        "test_prometheus_rules",
        "test_recorder_crash",
        "test_recorder_faults",
        "test_recorder_fleet",
        "test_replay_claims",
        "test_replay_resume",
        "test_report_cli",
        "test_report_html",
        "test_report_sources",
        "test_report_url_auth",
        "test_scorers_registry",
        "test_shutdown",
    }
)


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
