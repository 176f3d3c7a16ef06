"""The admin API's live reads (/api/pairs, /api/summary) through aiohttp's test server."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, api_routes

from tests.synthetic import synthetic_exchange

COUNT = 40
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def served(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> AsyncIterator[tuple[TestClient, Recorder, list[Exchange]]]:
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(tmp_path / "api.duckdb"), flush_interval_ms=20)
    recorder = Recorder(config, metrics)
    recorder.start()
    exchanges = [synthetic_exchange(i, started_at=T0 + timedelta(minutes=i)) for i in range(COUNT)]
    for exchange in exchanges:
        recorder.record(exchange)
    deadline = time.monotonic() + 10
    while (metrics.registry.get_sample_value("shadowtap_records_written_total") or 0) < COUNT:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    app = web.Application()
    app.add_routes(api_routes(recorder))
    yield await aiohttp_client(app), recorder, exchanges
    recorder.close()


async def test_pairs_are_json_newest_first_and_filterable(served: Any) -> None:
    client, _, exchanges = served
    response = await client.get("/api/pairs")
    assert response.status == 200
    pairs = (await response.json())["pairs"]
    assert len(pairs) == 2 * COUNT  # secondary and candidate for each request
    newest = exchanges[-1]
    first = pairs[0]
    assert first["request_id"] == newest.request_id
    assert datetime.fromisoformat(first["started_at"]) == newest.started_at
    assert first["target"] == "secondary" and first["role"] == "secondary"
    assert first["scores"] == {"similarity": pytest.approx(0.9 - 39 % 5 / 20), "exact": 1.0}
    assert first["candidate_tool_calls"][0]["name"] == "lookup"  # JSON, not a string
    assert first["request_body"]["model"] == "gpt-4o-mini"

    small = (await (await client.get("/api/pairs?target=small&limit=5")).json())["pairs"]
    assert [p["target"] for p in small] == ["small"] * 5
    assert [p["request_id"] for p in small] == [e.request_id for e in exchanges[-1:-6:-1]]

    since = (T0 + timedelta(minutes=COUNT - 3)).isoformat()
    recent = (await (await client.get("/api/pairs", params={"since": since})).json())["pairs"]
    assert len(recent) == 6


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "since=yesterday",
        "since=2025-13-01",
        "cursor=not-a-cursor",
        "cursor=WyJ4Il0=",  # valid base64 of JSON, but not a cursor's shape
    ],
)
async def test_bad_parameters_are_a_400_naming_the_parameter(served: Any, query: str) -> None:
    client, _, _ = served
    response = await client.get(f"/api/pairs?{query}")
    assert response.status == 400
    assert (await response.json())["error"].startswith(query.split("=")[0])


async def test_summary_per_target(served: Any) -> None:
    client, recorder, exchanges = served
    targets = (await (await client.get("/api/summary")).json())["targets"]
    assert set(targets) == {"primary", "secondary", "small"}
    small = targets["small"]
    latencies = [e.results["small"].completion.latency_s * 1000 for e in exchanges]
    assert small["role"] == "candidate"
    assert small["pairs"] == COUNT
    assert small["errors"] == COUNT // 10  # every tenth candidate answer is a 500
    assert small["mean_latency_ms"] == pytest.approx(statistics.fmean(latencies))
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[18]
    assert small["p95_latency_ms"] == pytest.approx(p95)
    assert small["agreement"] == {
        "similarity": pytest.approx(statistics.fmean(0.9 - i % 5 / 20 for i in range(COUNT))),
        "exact": pytest.approx(0.5),
    }
    assert targets["primary"]["agreement"] == {}

    recorder.close()
    assert (await client.get("/api/summary")).status == 503


async def test_reads_while_degraded_answer_503_saying_why(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    path = tmp_path / "api.duckdb"
    path.mkdir()  # the file cannot be opened
    recorder = Recorder(StorageConfig(path=str(path)), Metrics(CollectorRegistry()))
    recorder.start()
    app = web.Application()
    app.add_routes(api_routes(recorder))
    client = await aiohttp_client(app)
    try:
        for route in ("/api/pairs", "/api/summary"):
            response = await client.get(route)
            assert response.status == 503
            error = (await response.json())["error"]
            assert error.startswith("recording is degraded: cannot open") and str(path) in error
    finally:
        recorder.close()
