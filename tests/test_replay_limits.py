"""A replay stays within what it is told: budgets, a failing candidate, Retry-After, --rps and
--concurrency, each against a fake candidate on loopback that counts what it receives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from aiohttp import web
from shadowtap.replay.run import ReplayError, ReplayOptions, ReplayRunner

from tests.conftest import StartFake, StartShadowtap
from tests.fakes import FakeModel, chat_json
from tests.replaying import record_traffic, replay_config

N = 30
Answer = Callable[[int, dict[str, Any], bytes], Awaitable[web.Response]]


class Candidate:
    """A fake candidate whose answer to the n-th request (0-based) is `answer(n, ...)`; it keeps
    each arrival's monotonic time and the most requests it ever held at once."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        n = len(self.arrivals) - 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            body = await request.read()
            return await self.answer(n, orjson.loads(body), body)
        finally:
            self.in_flight -= 1


def usage_answer(prompt: int = 100, completion: int = 50, delay_s: float = 0.0) -> Answer:
    async def answer(n: int, payload: dict[str, Any], body: bytes) -> web.Response:
        if delay_s:
            await asyncio.sleep(delay_s)
        data = chat_json(payload, "An answer.", body)
        data["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion}
        return web.json_response(data)

    return answer


@pytest.fixture
async def recorded(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> tuple[Path, FakeModel]:
    db = tmp_path / "shadowtap.duckdb"
    return db, await record_traffic(start_fake, start_shadowtap, db, N)


@pytest.fixture
async def start_candidate(aiohttp_server: Any) -> Callable[[Answer], Awaitable[Candidate]]:
    async def start(answer: Answer) -> Candidate:
        candidate = Candidate(answer)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", candidate.handle)
        server = await aiohttp_server(app)
        candidate.url = str(server.make_url("")).rstrip("/")
        return candidate

    return start


def stored(db: Path, target: str = "new") -> int:
    con = duckdb.connect(str(db))
    try:
        row = con.execute("SELECT count(*) FROM responses WHERE target = ?", [target]).fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


PRICED = {"price_per_1k_prompt": 0.01, "price_per_1k_completion": 0.02}  # $0.002 per answer


async def test_the_cost_budget_stops_before_the_request_that_would_pass_it(
    recorded: tuple[Path, FakeModel], start_candidate: Any
) -> None:
    db, primary = recorded
    candidate = await start_candidate(usage_answer())
    config = replay_config(primary, {"new": {"url": candidate.url, **PRICED}})
    options = ReplayOptions("new", concurrency=1, max_cost_usd=0.007, progress=False)
    summary = await ReplayRunner(config, options, db).run()
    assert len(candidate.arrivals) == summary.counts.answered == 3  # a 4th: $0.008 > $0.007
    assert summary.counts.cost_usd == pytest.approx(0.006)
    assert summary.stop_reason is not None and "cost budget reached" in summary.stop_reason
    assert summary.counts.not_sent == N - 3 and not summary.complete
    assert stored(db) == 3
    # The same command later (with more budget) finishes the rest, sending nothing twice.
    more = ReplayOptions("new", concurrency=4, max_cost_usd=1.0, progress=False)
    rest = await ReplayRunner(config, more, db).run()
    assert rest.complete and rest.counts.answered == N - 3 and len(candidate.arrivals) == N


async def test_the_token_budget_counts_requests_in_flight_against_it(
    recorded: tuple[Path, FakeModel], start_candidate: Any
) -> None:
    db, primary = recorded
    candidate = await start_candidate(usage_answer(delay_s=0.02))
    config = replay_config(primary, {"new": candidate.url})
    options = ReplayOptions("new", concurrency=4, max_tokens=1_000, progress=False)
    summary = await ReplayRunner(config, options, db).run()
    assert summary.stop_reason is not None and "token budget" in summary.stop_reason
    # Launched while the spend so far plus one average answer each stayed within the budget.
    assert 1_000 - 150 < summary.counts.tokens <= 1_000
    assert len(candidate.arrivals) == summary.counts.answered < N


async def test_a_budget_needs_prices_and_bad_limits_are_refused(
    recorded: tuple[Path, FakeModel], start_candidate: Any
) -> None:
    db, primary = recorded
    config = replay_config(primary, {"new": "http://127.0.0.1:9"})
    with pytest.raises(ReplayError, match="needs the candidate's prices"):
        ReplayRunner(config, ReplayOptions("new", max_cost_usd=1.0), db)
    with pytest.raises(ReplayError, match=r"no candidate .nope.*configured: new"):
        ReplayRunner(config, ReplayOptions("nope"), db)
    for bad in (
        {"rps": 0.0},
        {"rps": float("nan")},
        {"concurrency": 0},
        {"max_tokens": -1},
        {"max_consecutive_errors": 0},
    ):
        with pytest.raises(ReplayError):
            ReplayRunner(config, ReplayOptions("new", **bad), db)  # type: ignore[arg-type]


async def test_consecutive_errors_stop_the_run_with_the_errors_stored(
    recorded: tuple[Path, FakeModel], start_fake: StartFake
) -> None:
    db, primary = recorded
    broken = await start_fake("error500")
    config = replay_config(primary, {"new": broken.url})
    options = ReplayOptions("new", concurrency=1, max_consecutive_errors=5, progress=False)
    summary = await ReplayRunner(config, options, db).run()
    assert len(broken.chat_requests()) == 5
    assert (
        summary.stop_reason == "the candidate keeps failing: 5 consecutive errors (last status 500)"
    )
    assert summary.counts.errors == summary.counts.answered == 5
    assert stored(db) == 5


async def test_retry_after_is_honoured_and_the_request_sent_again(
    recorded: tuple[Path, FakeModel], start_candidate: Any
) -> None:
    db, primary = recorded

    async def answer(n: int, payload: dict[str, Any], body: bytes) -> web.Response:
        if n in (0, 1):
            error = {"error": {"message": "slow down", "type": "rate_limit_error"}}
            return web.json_response(error, status=429, headers={"Retry-After": "1"})
        return await usage_answer()(n, payload, body)

    candidate = await start_candidate(answer)
    config = replay_config(primary, {"new": candidate.url})
    summary = await ReplayRunner(
        config, ReplayOptions("new", concurrency=1, progress=False), db
    ).run()
    assert summary.complete and summary.counts.answered == N and summary.counts.errors == 0
    assert summary.counts.retries == 2 and len(candidate.arrivals) == N + 2
    gaps = [b - a for a, b in zip(candidate.arrivals, candidate.arrivals[1:], strict=False)]
    assert gaps[0] >= 0.99 and gaps[1] >= 0.99  # each 429 held every request back 1 s
    assert stored(db) == N


async def test_a_429_storm_stops_the_run_and_leaves_the_refused_requests_for_later(
    recorded: tuple[Path, FakeModel], start_candidate: Any
) -> None:
    db, primary = recorded

    async def storm(n: int, payload: dict[str, Any], body: bytes) -> web.Response:
        return web.json_response(
            {"error": {"message": "no"}}, status=429, headers={"Retry-After": "0"}
        )

    candidate = await start_candidate(storm)
    config = replay_config(primary, {"new": candidate.url})
    options = ReplayOptions("new", concurrency=2, max_consecutive_errors=6, progress=False)
    summary = await ReplayRunner(config, options, db).run()
    assert summary.stop_reason is not None and "rate-limiting" in summary.stop_reason
    assert 6 <= len(candidate.arrivals) <= 7  # the other slot's attempt may be under way
    assert summary.counts.answered == 0 and stored(db) == 0
    # Refused is not answered: the claims are gone and the next run plans every request.
    candidate.answer = usage_answer()
    rerun = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert rerun.complete and rerun.counts.answered == N and stored(db) == N


async def test_a_retry_after_past_the_cap_stops_at_once(
    recorded: tuple[Path, FakeModel], start_candidate: Any
) -> None:
    db, primary = recorded

    async def closed(n: int, payload: dict[str, Any], body: bytes) -> web.Response:
        return web.json_response({}, status=503, headers={"Retry-After": "86400"})

    candidate = await start_candidate(closed)
    config = replay_config(primary, {"new": candidate.url})
    started = time.monotonic()
    summary = await ReplayRunner(
        config, ReplayOptions("new", concurrency=1, progress=False), db
    ).run()
    assert time.monotonic() - started < 30
    assert summary.stop_reason is not None and "86,400 s (Retry-After)" in summary.stop_reason
    assert len(candidate.arrivals) == 1 and summary.counts.rate_limited == 1


async def test_concurrency_is_never_exceeded_and_is_reached(
    recorded: tuple[Path, FakeModel], start_candidate: Any
) -> None:
    db, primary = recorded
    candidate = await start_candidate(usage_answer(delay_s=0.1))
    config = replay_config(primary, {"new": candidate.url})
    summary = await ReplayRunner(
        config, ReplayOptions("new", concurrency=3, progress=False), db
    ).run()
    assert summary.complete
    assert candidate.most_in_flight == 3


async def test_rps_holds_the_rate_over_the_window(
    start_fake: StartFake, start_shadowtap: StartShadowtap, start_candidate: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    primary = await record_traffic(start_fake, start_shadowtap, db, 101)
    candidate = await start_candidate(usage_answer())
    config = replay_config(primary, {"new": candidate.url})
    runner = ReplayRunner(config, ReplayOptions("new", rps=20, concurrency=8, progress=False), db)
    summary = await runner.run()
    assert summary.complete and len(candidate.arrivals) == 101
    # 100 intervals at 20/s: 5 s. The pacer's slots are fixed, so a late wake-up on a loaded
    # machine delays one arrival, not the ones after it.
    span = candidate.arrivals[-1] - candidate.arrivals[0]
    assert 100 / span == pytest.approx(20, rel=0.05)
    # The schedule only moves when the event loop stalls longer than the queued slots ahead.
    assert summary.paced_rps == pytest.approx(20, rel=0.05)
    assert f"Paced at {summary.paced_rps:.2f} requests/s" in summary.paragraph()
