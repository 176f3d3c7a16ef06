"""The admin server's /metrics after real traffic: lint-clean for promtool, and counting what
happened — per target, role and outcome — with `[server] metrics = false` honoured."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from shadowtap.server import ShadowtapServer

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.promtool import promtool_check_metrics

ROUTE = "/v1/chat/completions"


async def chat(port: int, payload: dict[str, Any]) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}{ROUTE}", json=payload) as response,
    ):
        assert response.status == 200
        return await response.read()


async def drive(server: ShadowtapServer, plain: int, streamed: int) -> None:
    messages = [{"role": "user", "content": "Name a prime."}]
    payloads = [{"model": "m", "messages": messages}] * plain + [
        {"model": "m", "messages": messages, "stream": True}
    ] * streamed
    await asyncio.gather(*(chat(server.proxy_port, payload) for payload in payloads))
    await server.shadow_tasks.wait(10)
    await server.exchange_tasks.wait(10)


async def scrape(server: ShadowtapServer) -> tuple[str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.admin_port}/metrics") as response,
    ):
        assert response.status == 200
        return response.headers["Content-Type"], await response.read()


def samples(exposition: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


def sample(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def test_metrics_after_traffic_are_lint_clean_and_count_it(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, good, broken = (
        await start_fake("ok"),
        await start_fake("paraphrase"),
        await start_fake("error500"),
    )
    config = make_config(
        primary,
        {"good": {"url": good.url, "price_per_1k_completion": 2.0}, "broken": broken.url},
        scorers={"similarity": {"type": "text_similarity", "threshold": 0.6}},
    )
    server = await start_shadowtap(config)
    await drive(server, plain=3, streamed=2)

    content_type, exposition = await scrape(server)
    assert content_type.startswith("text/plain;")  # the text format Prometheus scrapes
    lint = promtool_check_metrics(exposition)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr

    found = samples(exposition)
    requests = "shadowtap_requests_total"
    labels = {"route": ROUTE, "role": "primary", "target": "primary"}
    assert sample(found, requests, **labels, status_class="2xx") == 5
    assert sample(found, "shadowtap_time_to_first_token_seconds_count", **labels) == 2
    assert sample(found, "shadowtap_request_duration_seconds_count", **labels) == 5
    broken_labels = {"route": ROUTE, "role": "candidate", "target": "broken"}
    assert sample(found, requests, **broken_labels, status_class="5xx") == 5
    assert sample(found, "shadowtap_shadow_requests_total", target="broken", outcome="error") == 5
    assert sample(found, "shadowtap_shadow_requests_total", target="good", outcome="ok") == 5
    assert sample(found, "shadowtap_shadow_inflight", target="good") == 0
    assert sample(found, "shadowtap_sampling_decisions_total", route=ROUTE, outcome="sampled") == 5
    assert sample(found, "shadowtap_agreement_score_count", target="good", scorer="similarity") == 5
    assert sample(found, "shadowtap_disagreements_total", target="good", scorer="similarity") == 5
    # Usage came with the 3 JSON answers (streams did not ask for it); only "good" has a price.
    completion_tokens = sample(found, "shadowtap_tokens_total", target="good", kind="completion")
    assert completion_tokens is not None and completion_tokens > 0
    cost = sample(found, "shadowtap_cost_usd_total", target="good")
    assert cost is not None and abs(cost - completion_tokens / 1000 * 2.0) < 1e-9
    assert sample(found, "shadowtap_cost_usd_total", target="primary") is None
    build_info = [value for (name, _), value in found.items() if name == "shadowtap_build_info"]
    assert build_info == [1.0]
    # Connections per listener: the scrape itself is open on the admin listener.
    assert (sample(found, "shadowtap_connections_open", listener="admin") or 0) >= 1
    for listener in ("proxy", "admin"):
        assert sample(found, "shadowtap_connections_rejected_total", listener=listener) == 0
        for phase in ("header", "body"):
            timeouts = "shadowtap_client_timeouts_total"
            assert sample(found, timeouts, listener=listener, phase=phase) == 0


async def test_metrics_off_exports_no_traffic_series(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake("ok"), await start_fake("ok")
    config = make_config(primary, {"c": candidate}, server={"metrics": False})
    server = await start_shadowtap(config)
    await drive(server, plain=2, streamed=1)
    assert len(candidate.chat_requests()) == 3  # shadowing itself still runs
    _, exposition = await scrape(server)
    names = {name for name, _ in samples(exposition)}
    assert "shadowtap_requests_total" not in names
    assert "shadowtap_shadow_requests_total" not in names
    assert "shadowtap_records_dropped_total" in names  # drops are counted regardless
    assert "shadowtap_connections_rejected_total" in names  # and so are refused clients
    assert "shadowtap_client_timeouts_total" in names
