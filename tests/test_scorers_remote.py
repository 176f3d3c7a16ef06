"""embedding_similarity and llm_judge against real fake servers on loopback."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap.completion import Completion
from shadowtap.exchange import Exchange, Score
from shadowtap.metrics import Metrics
from shadowtap.scorers.base import IoScorer, Pair, Verdict
from shadowtap.scorers.runner import ScoringRunner

from tests.exchanges import chat_exchange
from tests.scorer_tables import scorers_from

SECRET = "sk-test-SECRET-do-not-leak"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "What is 6 x 7?"}]}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def pair(a: str, b: str) -> Pair:
    return Pair(
        REQUEST, Completion(status=200, text=a), Completion(status=200, text=b), "cand", "candidate"
    )


def io_scorer(type_name: str, url: str, **options: Any) -> IoScorer[Any]:
    table = {"type": type_name, "url": url, "model": "judge-1", "api_key": SECRET, **options}
    built = scorers_from({"s": table})[0]
    assert isinstance(built, IoScorer)
    return built


async def serve(aiohttp_server: Any, path: str, handler: Callable[..., Any]) -> tuple[str, list]:
    """A fake endpoint at `path`; returns its base URL and the list of requests it received."""
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def wrapped(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append((dict(request.headers), body))
        return await handler(body)

    app = web.Application()
    app.router.add_post(path, wrapped)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), seen


# -- embedding_similarity ----------------------------------------------------------------------


def vector(text: str) -> list[float]:
    """Counts of a few letters: texts sharing letters point the same way."""
    return [float(text.count(c)) for c in "aeiouy"] + [0.0]


async def embeddings(body: dict[str, Any]) -> web.Response:
    data = [{"index": i, "embedding": vector(t)} for i, t in enumerate(body["input"])]
    return web.json_response({"object": "list", "data": list(reversed(data))})  # any order


async def test_embedding_similarity_cosine_auth_and_shortcuts(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    url, seen = await serve(aiohttp_server, "/v1/embeddings", embeddings)
    scorer = io_scorer("embedding_similarity", url)
    same_direction = await scorer.score(pair("aaee", "aaaaeeee"), session)
    assert isinstance(same_direction, Verdict)
    assert same_direction.score == pytest.approx(1.0)
    orthogonal = await scorer.score(pair("aaa", "ooo"), session)
    assert isinstance(orthogonal, Verdict) and orthogonal.score == pytest.approx(0.0)
    assert len(seen) == 2
    headers, body = seen[0]
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert body == {"model": "judge-1", "input": ["aaee", "aaaaeeee"]}
    # No request for equal texts or an empty side.
    assert await scorer.score(pair("same ", "same"), session) == 1.0
    assert await scorer.score(pair("", "text"), session) == 0.0
    assert len(seen) == 2
    assert SECRET not in repr(scorer) and SECRET not in repr(scorer.options)


async def test_embedding_similarity_long_unicode_inputs_are_cut(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    url, seen = await serve(aiohttp_server, "/v1/embeddings", embeddings)
    scorer = io_scorer("embedding_similarity", url + "/v1", max_chars=1000)
    result = await scorer.score(pair("é a " * 50_000, "東京 aeiou " * 10_000), session)
    assert isinstance(result, Verdict)
    assert [len(t) for t in seen[0][1]["input"]] == [1000, 1000]


@pytest.mark.parametrize(
    "reply",
    [
        web.Response(status=500, text="upstream exploded"),
        web.Response(text="not json"),
        web.json_response({"data": [{"index": 0, "embedding": [1.0]}]}),
        web.json_response(
            {"data": [{"index": 0, "embedding": [0.0]}, {"index": 1, "embedding": [0.0]}]}
        ),
    ],
)
async def test_embedding_failures_are_scorer_errors_without_secrets(
    aiohttp_server: Any, session: aiohttp.ClientSession, reply: web.Response
) -> None:
    async def handler(_body: dict[str, Any]) -> web.Response:
        return reply

    url, _ = await serve(aiohttp_server, "/v1/embeddings", handler)
    registry = CollectorRegistry()
    runner = ScoringRunner([io_scorer("embedding_similarity", url)], Metrics(registry), session)
    scores = await runner.score(exchange("first answer", "second answer"))
    await runner.close()
    assert [(s.target, s.score) for s in scores] == [("cand", None)]
    assert scores[0].error is not None and SECRET not in scores[0].error
    assert registry.get_sample_value("shadowtap_scorer_errors_total", {"scorer": "s"}) == 1


def exchange(primary: str, candidate: str) -> Exchange:
    answers = {"primary": primary, "cand": candidate}
    return chat_exchange(
        {name: Completion(status=200, text=text) for name, text in answers.items()},
        REQUEST,
        request_id="0190f0f0-0000-7000-8000-000000000001",
    )


# -- llm_judge ---------------------------------------------------------------------------------

ANSWERS = re.compile(r"## Answer A\n(.*)\n\n## Answer B\n(.*)", re.DOTALL)


def judge(prefer: Callable[[str, str], str]) -> Callable[..., Any]:
    async def handler(body: dict[str, Any]) -> web.Response:
        found = ANSWERS.search(body["messages"][-1]["content"])
        assert found is not None
        winner = prefer(found.group(1), found.group(2))
        content = json.dumps({"winner": winner, "rationale": f"picked {winner}"})
        return web.json_response(
            {"choices": [{"message": {"role": "assistant", "content": content}}]}
        )

    return handler


def prefers_42(a: str, b: str) -> str:
    return {(True, False): "A", (False, True): "B"}.get(("42" in a, "42" in b), "tie")


async def test_llm_judge_asks_both_orders_and_stores_the_verdict(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    url, seen = await serve(aiohttp_server, "/v1/chat/completions", judge(prefers_42))
    scorer = io_scorer("llm_judge", url, rubric="Correct arithmetic wins.", max_per_second=100)
    worse = await scorer.score(pair("It is 42.", "It is 41."), session)
    assert isinstance(worse, Verdict) and worse.detail is not None
    assert worse.score == 0.0
    assert worse.detail["verdict"] == "primary_better"
    assert worse.detail["rationale"] == "picked A"
    assert [o["winner"] for o in worse.detail["orders"]] == ["primary", "primary"]
    # Both orders were asked: the primary's answer is A once and B once.
    assert len(seen) == 2
    a_sides = sorted(ANSWERS.search(b["messages"][-1]["content"]).group(1) for _, b in seen)  # type: ignore[union-attr]
    assert a_sides == ["It is 41.", "It is 42."]
    headers, body = seen[0]
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert "Correct arithmetic wins." in body["messages"][0]["content"]
    assert "What is 6 x 7?" in body["messages"][-1]["content"]
    assert body["model"] == "judge-1" and body["temperature"] == 0.0
    tie = await scorer.score(pair("42", "forty... 42"), session)
    assert isinstance(tie, Verdict) and tie.score == 1.0 and tie.detail["verdict"] == "tie"  # type: ignore[index]
    better = await scorer.score(pair("no idea", "42"), session)
    assert isinstance(better, Verdict) and better.score == 1.0
    assert better.detail["verdict"] == "target_better"  # type: ignore[index]
    assert SECRET not in json.dumps(worse.detail) and SECRET not in repr(scorer)


async def test_llm_judge_position_bias_shows_as_inconsistent(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    url, _ = await serve(aiohttp_server, "/v1/chat/completions", judge(lambda a, b: "A"))
    result = await io_scorer("llm_judge", url).score(pair("one", "two"), session)
    assert isinstance(result, Verdict) and result.detail is not None
    assert result.score == 0.5
    assert result.detail["verdict"] == "inconsistent"


async def test_llm_judge_budget_skips_instead_of_queueing(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    url, seen = await serve(aiohttp_server, "/v1/chat/completions", judge(prefers_42))
    scorer = io_scorer("llm_judge", url, max_per_second=0.01)  # burst of 2 calls = one pair
    registry = CollectorRegistry()
    runner = ScoringRunner([scorer], Metrics(registry), session)
    first, second = await asyncio.gather(
        runner.score(exchange("42", "41")), runner.score(exchange("42", "41"))
    )
    await runner.close()
    results = sorted([first[0], second[0]], key=lambda s: s.score is None)
    assert results[0].score == 0.0
    assert results[1] == Score("cand", "s", None, {"skipped": "judge budget"}, None, 0.8)
    assert len(seen) == 2
    assert registry.get_sample_value("shadowtap_scorer_skipped_total", {"scorer": "s"}) == 1


@pytest.mark.parametrize(
    ("content", "status"),
    [("I think A is better.", 200), ('{"winner": "C"}', 200), ("{}", 500)],
)
async def test_llm_judge_failures_are_scorer_errors(
    aiohttp_server: Any, session: aiohttp.ClientSession, content: str, status: int
) -> None:
    async def handler(_body: dict[str, Any]) -> web.Response:
        reply = {"choices": [{"message": {"content": content}}]}
        return web.json_response(reply, status=status)

    url, _ = await serve(aiohttp_server, "/v1/chat/completions", handler)
    registry = CollectorRegistry()
    runner = ScoringRunner([io_scorer("llm_judge", url)], Metrics(registry), session)
    scores = await runner.score(exchange("42", "41"))
    await runner.close()
    assert scores[0].score is None and scores[0].error
    assert registry.get_sample_value("shadowtap_scorer_errors_total", {"scorer": "s"}) == 1


async def test_llm_judge_timeout_is_a_scorer_error(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    async def hang(_body: dict[str, Any]) -> web.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    url, _ = await serve(aiohttp_server, "/v1/chat/completions", hang)
    runner = ScoringRunner(
        [io_scorer("llm_judge", url, timeout_s=0.2)], Metrics(CollectorRegistry()), session
    )
    scores = await runner.score(exchange("42", "41"))
    await runner.close()
    assert scores[0].error == "TimeoutError: after 0.2 s"


def test_llm_judge_reply_parsing() -> None:
    from shadowtap.scorers.llm_judge import parse_winner

    assert parse_winner('{"winner": "b", "rationale": "x"}') == ("B", "x")
    assert parse_winner('```json\n{"winner": "TIE"}\n```') == ("tie", "")
    assert parse_winner('Sure: {"winner": "A", "rationale": "y"} done') == ("A", "y")
    with pytest.raises(ValueError):
        parse_winner("A")
