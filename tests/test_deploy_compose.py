"""deploy/compose.yaml: valid against the Compose specification, and its services wired together.

Docker cannot run here, so the checks are what `docker compose up` would trip over: the schema,
bind-mount sources, the commands of the demo services (parsed by the demo modules' own argument
parsers), the shadowtap config (checked by `shadowtap check-config`), and the addresses that
Prometheus and Grafana use to find shadowtap and each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from shadowtap.config import load_config, split_host_port
from shadowtap.demo import models as demo_models
from shadowtap.demo import traffic as demo_traffic
from shadowtap.server import SCORING_AFTER_GRACE_S

from tests.kustomize import (
    REPO,
)

DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount (short syntax, relative to deploy/)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a file the container reads comes from, through the deepest bind mount above it."""
    path = PurePosixPath(container_path)
    mounts = bind_mounts(service)
    above = [t for t in mounts if path == PurePosixPath(t) or PurePosixPath(t) in path.parents]
    assert above, f"{container_path} is not bind-mounted"
    target = max(above, key=len)
    return mounts[target] / path.relative_to(target)


def test_compose_file_matches_the_compose_specification():
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_can_fail(tmp_path: Path, compose):
    broken = dict(compose)
    broken["services"] = {"shadowtap": {"image": "shadowtap:local", "ports": "8080:8080"}}
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout


def test_bind_mount_sources_exist(compose):
    for name, service in compose["services"].items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"


def test_the_shadowtap_config_passes_check_config(compose):
    config_path = host_path(compose["services"]["shadowtap"], "/etc/shadowtap/shadowtap.toml")
    result = subprocess.run(
        [BIN / "shadowtap", "check-config", "--config", config_path],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_shadowtap_reaches_the_simulated_models(compose):
    services = compose["services"]
    config = load_config(host_path(services["shadowtap"], "/etc/shadowtap/shadowtap.toml"), {})
    assert services["models"]["entrypoint"] == ["python", "-m", "shadowtap.demo.models"]
    args = demo_models._parse_args(services["models"]["command"])
    served = demo_models.models_from_args(args)  # profile -> (host, port)
    assert {host for host, _ in served.values()} == {"0.0.0.0"}
    ports = {port: profile for profile, (_, port) in served.items()}
    upstreams = {"primary": config.primary.url} | {
        name: candidate.url for name, candidate in config.candidates.items()
    }
    for target, url in upstreams.items():
        parts = urlsplit(url)
        assert parts.hostname == "models", f"{target}: {url}"
        assert ports.get(parts.port) == target, f"{target}: {url} serves {ports.get(parts.port)}"
    assert set(ports.values()) == set(upstreams), "every simulated model is used"


def test_traffic_goes_through_shadowtap(compose):
    services = compose["services"]
    config = load_config(host_path(services["shadowtap"], "/etc/shadowtap/shadowtap.toml"), {})
    assert services["traffic"]["entrypoint"] == ["python", "-m", "shadowtap.demo.traffic"]
    args = demo_traffic._parse_args(services["traffic"]["command"])
    assert args.forever
    base_url = urlsplit(args.base_url)
    listen_host, listen_port = split_host_port(config.server.listen)
    assert listen_host == "0.0.0.0"
    assert (base_url.hostname, base_url.port, base_url.path) == ("shadowtap", listen_port, "/v1")
    published = [p.rsplit(":", 2)[-2:] for p in services["shadowtap"]["ports"]]
    assert [str(listen_port)] * 2 in published


def test_prometheus_scrapes_shadowtap_and_loads_the_rules(compose):
    services = compose["services"]
    config = load_config(host_path(services["shadowtap"], "/etc/shadowtap/shadowtap.toml"), {})
    prometheus = services["prometheus"]
    config_flag = next(f for f in prometheus["command"] if f.startswith("--config.file="))
    config_file = config_flag.partition("=")[2]
    scrape = yaml.safe_load(host_path(prometheus, config_file).read_text())
    admin_host, admin_port = split_host_port(config.server.admin_listen)
    assert admin_host == "0.0.0.0"
    targets = [
        target
        for job in scrape["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"shadowtap:{admin_port}" in targets
    for pattern in scrape.get("rule_files", []):
        in_container = PurePosixPath(config_file).parent / pattern
        directory = host_path(prometheus, str(in_container.parent))
        assert list(directory.glob(in_container.name)), f"rule_files {pattern} matches nothing"


def test_grafana_gets_the_datasource_and_the_dashboards(compose):
    grafana = compose["services"]["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    urls = {urlsplit(source["url"])[1] for source in datasources}
    assert urls == {"prometheus:9090"}, "the compose service name and Prometheus' port"
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    assert providers
    for provider in providers:
        dashboards = host_path(grafana, provider["options"]["path"])
        assert list(dashboards.glob("*.json")), f"{provider['name']}: no dashboards mounted"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home).is_file()
    assert "127.0.0.1:3000:3000" in grafana["ports"]


def test_services_wait_for_healthy_dependencies(compose):
    services = compose["services"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] != "service_healthy":
                continue
            has_check = "healthcheck" in services[dependency] or (
                services[dependency].get("build", {}).get("dockerfile") == "deploy/Dockerfile"
                and "\nHEALTHCHECK " in dockerfile
            )
            assert has_check, f"{name} waits for {dependency}, which has no healthcheck"
    # The image's health check asks the admin port this config listens on.
    config = load_config(host_path(services["shadowtap"], "/etc/shadowtap/shadowtap.toml"), {})
    _, admin_port = split_host_port(config.server.admin_listen)
    assert f"SHADOWTAP_HEALTHCHECK_URL=http://127.0.0.1:{admin_port}/healthz" in dockerfile


def test_stop_grace_period_covers_the_drain(compose):
    services = compose["services"]
    config = load_config(host_path(services["shadowtap"], "/etc/shadowtap/shadowtap.toml"), {})
    grace = services["shadowtap"]["stop_grace_period"]
    assert grace.endswith("s")
    flush_s = config.storage.flush_interval_ms / 1000 + 5  # the last batch, plus writing it
    drain = config.server.shutdown_grace_s + SCORING_AFTER_GRACE_S + flush_s
    assert float(grace[:-1]) >= drain


def _rewrite(words: list[str], flag: str, value: str) -> list[str]:
    assert flag in words, f"the compose command has no {flag}"
    index = words.index(flag)
    return [*words[: index + 1], value, *words[index + 2 :]]


def shadow_counts(exposition: str) -> dict[str, float]:
    """shadowtap_shadow_requests_total per target, summed over outcomes."""
    shadows: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == "shadowtap_shadow_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    target = sample.labels["target"]
                    shadows[target] = shadows.get(target, 0) + sample.value
    return shadows


@pytest.mark.slow
async def test_the_stack_runs_its_services_commands_on_loopback(compose, tmp_path: Path):
    """models, shadowtap and traffic as compose runs them, with the compose network's names
    replaced by loopback addresses (and the models sped up): shadows reach every candidate."""
    services = compose["services"]
    models_command = _rewrite(services["models"]["command"], "--host", "127.0.0.1")
    served = demo_models.models_from_args(demo_models._parse_args(models_command))
    ports = {port: name for name, (_, port) in served.items()}
    free = ",".join(f"{name}=0" for name in served)
    models_command = [*_rewrite(models_command, "--profiles", free), "--speed", "50"]
    # The image's `python` is the venv's; here it is this venv's.
    assert services["models"]["entrypoint"][0] == "python"
    models = await asyncio.create_subprocess_exec(
        sys.executable, *services["models"]["entrypoint"][1:], *models_command, stdout=-1
    )
    shadowtap = None
    try:
        assert models.stdout is not None
        urls = {}
        while len(urls) < len(served):
            line = await asyncio.wait_for(models.stdout.readline(), 30)
            assert line, "the models process exited"
            urls[orjson.loads(line)["profile"]] = orjson.loads(line)["url"]
        text = host_path(services["shadowtap"], "/etc/shadowtap/shadowtap.toml").read_text()
        for port, name in ports.items():
            text = text.replace(f'"http://models:{port}"', f'"{urls[name]}"')
        listen, admin = free_port(), free_port()
        text = text.replace('"0.0.0.0:8080"', f'"127.0.0.1:{listen}"')
        text = text.replace('"0.0.0.0:9464"', f'"127.0.0.1:{admin}"')
        text = text.replace('"/var/lib/shadowtap/', f'"{tmp_path}/')
        assert "models:" not in text and "0.0.0.0" not in text and "/var/lib" not in text
        config_path = tmp_path / "shadowtap.toml"
        config_path.write_text(text)
        shadowtap = await asyncio.create_subprocess_exec(
            BIN / "shadowtap", "serve", "--config", config_path, stdout=-1, stderr=-1
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"http://127.0.0.1:{admin}/readyz") as ready:
                        if ready.status == 200:
                            break
                assert shadowtap.returncode is None, "shadowtap exited"
                await asyncio.sleep(0.1)
            traffic_command = list(services["traffic"]["command"])
            traffic_command = _rewrite(
                traffic_command, "--base-url", f"http://127.0.0.1:{listen}/v1"
            )
            traffic_command = _rewrite(traffic_command, "--rps", "40")
            traffic_command = [w for w in traffic_command if w != "--forever"]
            traffic = await asyncio.create_subprocess_exec(
                sys.executable,
                *services["traffic"]["entrypoint"][1:],
                *traffic_command,
                "--requests",
                "40",
                stdout=-1,
                stderr=-1,
            )
            _, err = await asyncio.wait_for(traffic.communicate(), 60)
            assert traffic.returncode == 0, err.decode()[-2000:]
            expected = set(load_config(config_path, {}).candidates) | {"secondary"}
            # The last shadows finish after the traffic does: wait for them, not a guess.
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                async with session.get(f"http://127.0.0.1:{admin}/metrics") as response:
                    shadows = shadow_counts(await response.text())
                done = {t for t, count in shadows.items() if count > 0} >= expected
                if done or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert {t for t, count in shadows.items() if count > 0} == expected
    finally:
        # Models first: their shutdown releases hanging answers, so shadowtap's drain is quick.
        for process in (models, shadowtap):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.communicate(), 60)
    assert shadowtap.returncode == 0
