"""Acceptance: a real Prometheus scrapes a real shadowtap every second while traffic flows through
it to a paraphrasing candidate and a failing one; then every panel query of every dashboard
(template variables substituted as Grafana would) must return series through Prometheus's
HTTP API, and the alert rules, loaded into the same Prometheus, see the failing candidate."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from shadowtap.server import ShadowtapServer

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.dashboards import BOARDS, interpolate, panel_queries

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules"
RATE_INTERVAL = "1m"  # what $__rate_interval becomes: wider than the whole test, >= 2 scrapes

# Queries whose healthy value is 0 here (nothing dropped, queued or failing; the secondary
# answers exactly like the primary), as (panel title, refId); "*" is every query of the panel.
ZERO_WHEN_HEALTHY = {
    ("Primary error rate", "*"),
    ("Scorer errors and skips/s", "*"),
    ("Shed share by target", "*"),
    ("Shadows in flight", "*"),
    ("Record queue depth", "*"),
    ("Recorder throughput", "B"),  # dropped
    ("Recorder throughput", "C"),  # write errors
    ("Disagreement rate, beside the noise floor", "B"),  # the noise floor
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    """A Prometheus server process on loopback with a temporary data directory."""

    def __init__(self, base_url: str, process: asyncio.subprocess.Process) -> None:
        self.base_url = base_url
        self.process = process
        self.session = aiohttp.ClientSession()

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.base_url}/api/v1/{path}", params=params) as response:
            payload = await response.json()
        assert payload["status"] == "success", payload
        return payload["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    async def wait_for(
        self, expr: str, ok: Callable[[list[dict[str, Any]]], bool], within_s: float = 20
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within_s
        while True:
            result = await self.query(expr)
            if ok(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never satisfied {expr!r}; last result {result}")
            await asyncio.sleep(0.25)

    async def scraped_after(self, moment: float) -> None:
        """Wait for a scrape of shadowtap that started after `moment` (Unix seconds)."""
        await self.wait_for(
            'timestamp(up{job="shadowtap"})',
            lambda result: bool(result) and float(result[0]["value"][1]) > moment,
        )


StartPrometheus = Callable[[int], Awaitable[Prometheus]]


@pytest.fixture
async def start_prometheus(tmp_path: Path) -> AsyncIterator[StartPrometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus; .ci/run does it)")
    started: list[Prometheus] = []

    async def start(admin_port: int) -> Prometheus:
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES / "*.rules.yml")],
            "scrape_configs": [
                {
                    "job_name": "shadowtap",
                    "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        prometheus = Prometheus(f"http://127.0.0.1:{port}", process)
        started.append(prometheus)
        deadline = time.monotonic() + 20
        while True:
            if process.returncode is not None:
                pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
            try:
                async with prometheus.session.get(f"{prometheus.base_url}/-/ready") as response:
                    if response.status == 200:
                        return prometheus
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("prometheus did not become ready in 20 s")
            await asyncio.sleep(0.1)

    yield start
    for prometheus in started:
        await prometheus.session.close()
        prometheus.process.terminate()
        try:
            await asyncio.wait_for(prometheus.process.wait(), 10)
        except TimeoutError:
            prometheus.process.kill()
            await prometheus.process.wait()


async def drive_traffic(
    server: ShadowtapServer, prometheus: Prometheus, rounds: int = 3, per_round: int = 8
) -> None:
    """JSON and streamed chat completions through the proxy with the official client, in
    rounds; after each, wait for a scrape that saw it complete, so every series — also those
    born mid-traffic — has samples with different values and rate() is positive."""
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.proxy_port}/v1", api_key="sk-test", max_retries=0
    )
    async with client:
        for round_number in range(rounds):
            calls = []
            for i in range(per_round):
                messages = [{"role": "user", "content": f"Question {round_number}-{i}?"}]
                if i % 2:
                    calls.append(_streamed(client, messages))
                else:
                    calls.append(
                        client.chat.completions.create(model="gpt-test", messages=messages)
                    )
            await asyncio.gather(*calls)
            await server.shadow_tasks.wait(10)
            await server.exchange_tasks.wait(10)
            await prometheus.scraped_after(time.time())


async def _streamed(client: openai.AsyncOpenAI, messages: list[Any]) -> str:
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


@pytest.mark.slow
async def test_every_dashboard_query_returns_series_from_a_real_prometheus(
    tmp_path: Path,
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    start_prometheus: StartPrometheus,
) -> None:
    primary = await start_fake("ok")
    paraphraser = await start_fake("paraphrase")
    broken = await start_fake("error500")
    prices = {"price_per_1k_prompt": 0.5, "price_per_1k_completion": 1.5}
    config = make_config(
        primary,
        {
            "paraphraser": {"url": paraphraser.url, "model": "small-model", **prices},
            "broken": {"url": broken.url, **prices},
        },
        secondary={"rate": 1.0},
        scorers={
            "similarity": {"type": "text_similarity", "threshold": 0.6},
            "exact": {"type": "exact_match"},
        },
        storage={
            "enabled": True,
            "path": str(tmp_path / "shadowtap.duckdb"),
            "flush_interval_ms": 100,
        },
    )
    config["primary"].update(prices)
    server = await start_shadowtap(config)
    prometheus = await start_prometheus(server.admin_port)
    await prometheus.wait_for('up{job="shadowtap"} == 1', bool)

    await drive_traffic(server, prometheus)
    written = server.registry.get_sample_value("shadowtap_records_written_total")
    deadline = time.monotonic() + 10
    while not written or written < 24:  # the recorder flushes on its own clock
        assert time.monotonic() < deadline, f"recorder wrote {written} of 24 exchanges"
        await asyncio.sleep(0.1)
        written = server.registry.get_sample_value("shadowtap_records_written_total")
    # Prometheus has the final counts once a scrape after the last exchange has landed.
    await prometheus.wait_for(
        "sum(shadowtap_records_written_total)",
        lambda result: bool(result) and float(result[0]["value"][1]) >= 24,
    )

    # The candidate variable, queried as Grafana would (label_values -> the label values API).
    for name, board in BOARDS.items():
        variable = next(v for v in board["templating"]["list"] if v["name"] == "candidate")
        match = re.fullmatch(r"label_values\((.*), target\)", variable["query"])
        assert match, variable["query"]
        values = await prometheus.api("label/target/values", **{"match[]": match.group(1)})
        assert sorted(values) == ["broken", "paraphraser"], (name, values)
    candidates = ["broken", "paraphraser"]

    empty, all_zero, checked = [], [], 0
    for name, board in BOARDS.items():
        for title, ref, expr in panel_queries(board):
            result = await prometheus.query(interpolate(expr, candidates, RATE_INTERVAL))
            checked += 1
            values = [float(series["value"][1]) for series in result]
            if not result:
                empty.append(f"{name} · {title} · {ref}: {expr}")
            elif not ({(title, "*"), (title, ref)} & ZERO_WHEN_HEALTHY) and not any(
                math.isfinite(v) and v > 0 for v in values
            ):
                all_zero.append(f"{name} · {title} · {ref}: {result}")
    assert checked >= 25
    assert not empty, "queries without series:\n" + "\n".join(empty)
    assert not all_zero, "queries without a positive value:\n" + "\n".join(all_zero)

    # What the panels show is right, not only present.
    error_rate = await prometheus.query(
        interpolate(
            'sum by (target) (rate(shadowtap_requests_total{target=~"$candidate",'
            ' status_class=~"5xx|error"}[1m])) / sum by (target)'
            ' (rate(shadowtap_requests_total{target=~"$candidate"}[1m]))',
            candidates,
        )
    )
    by_target = {series["metric"]["target"]: float(series["value"][1]) for series in error_rate}
    assert by_target == {"broken": 1.0, "paraphraser": 0.0}
    agreement = await prometheus.query(
        "sum by (target) (shadowtap_agreement_score_sum{scorer='exact'})"
        " / sum by (target) (shadowtap_agreement_score_count{scorer='exact'})"
    )
    means = {series["metric"]["target"]: float(series["value"][1]) for series in agreement}
    assert means == {"secondary": 1.0, "paraphraser": 0.0}  # the noise floor agrees exactly

    # The alert rules run on the real metric names: the failing candidate is flagged (pending,
    # since the rule waits 10 minutes), the paraphrasing one is not.
    await prometheus.wait_for(
        'ALERTS{alertname="ShadowtapCandidateErrorRateHigh", target="broken"}', bool
    )
    flagged = await prometheus.query('ALERTS{alertname="ShadowtapCandidateErrorRateHigh"}')
    assert {series["metric"]["target"] for series in flagged} == {"broken"}
