"""Shadowing: who gets mirrored, with what body and credentials, and that failures stay hidden."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import openai
import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import CHAT, RecordingSink, drain, post, post_direct


@pytest.mark.slow  # a statistical bound over thousands of requests
async def test_sampling_rate_is_within_a_binomial_bound(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    rate, n = 0.3, 400
    # The shadow budget is off: this measures the sampling rate, not what a loaded machine sheds.
    sampling = {"rate": rate, "max_inflight": 0}
    server = await start_shadowtap(make_config(primary, {"c": candidate}, sampling=sampling))
    await asyncio.gather(*(post(server.proxy_port, CHAT) for _ in range(n)))
    await drain(server)
    mirrored = len(candidate.chat_requests())
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(mirrored - n * rate) < 4.5 * sigma, mirrored  # fails ~1 in 150,000 runs
    assert len(primary.chat_requests()) == n


async def test_sticky_key_samples_the_same_users_every_time(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    config = make_config(primary, {"c": candidate}, sampling={"rate": 0.5, "key": "body:user"})
    server = await start_shadowtap(config)
    users = [f"user-{i}" for i in range(60)]
    for _ in range(3):
        for user in users:
            await post(server.proxy_port, {**CHAT, "user": user})
    await drain(server)
    seen = [r.json["user"] for r in candidate.chat_requests()]
    counts = {user: seen.count(user) for user in set(seen)}
    assert set(counts.values()) == {3}, counts  # a sampled user is always sampled
    assert 12 <= len(counts) <= 48  # about half the users, not all or none


async def test_sticky_header_key(start_fake: StartFake, start_shadowtap: StartShadowtap) -> None:
    primary, candidate = await start_fake(), await start_fake()
    config = make_config(
        primary, {"c": candidate}, sampling={"rate": 0.5, "key": "header:X-Session"}
    )
    server = await start_shadowtap(config)
    for session_id in [f"session-{i}" for i in range(30)] * 2:
        await post(server.proxy_port, CHAT, **{"X-Session": session_id})
    await drain(server)
    mirrored = candidate.chat_requests()
    # shadows never see client headers outside the pass-through set
    assert all("X-Session" not in r.headers for r in mirrored)
    assert len(mirrored) % 2 == 0 and 0 < len(mirrored) < 60  # each session: twice or never


async def test_model_rewrite_and_per_candidate_auth(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, small, same = await start_fake(), await start_fake(), await start_fake()
    config = make_config(
        primary,
        {
            "small": {
                "url": small.url,
                "model": "llama-3.1-8b",
                "api_key": "sk-small-candidate",
                "headers": {"X-Team": "evals"},
            },
            "same": {"url": same.url},
        },
    )
    server = await start_shadowtap(config)
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.proxy_port}/v1",
        api_key="sk-client-SECRET-1234",
        organization="org-client",
    )
    await client.chat.completions.create(**CHAT)
    await drain(server)
    to_small = small.chat_requests()[0]
    assert to_small.json["model"] == "llama-3.1-8b"
    assert to_small.json["messages"] == CHAT["messages"]
    assert to_small.headers["Authorization"] == "Bearer sk-small-candidate"
    assert to_small.headers["X-Team"] == "evals"
    to_same = same.chat_requests()[0]
    assert to_same.body == primary.chat_requests()[0].body  # no model set: bytes unchanged
    for request in (to_small, to_same):
        assert "sk-client-SECRET-1234" not in str(request.headers)
        assert "OpenAI-Organization" not in request.headers
    assert "Authorization" not in to_same.headers
    await client.close()


async def test_a_long_prompt_reaches_a_rewriting_candidate_with_only_its_model_changed(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """The model is replaced in the client's own bytes (sent in pieces, never joined): the
    candidate gets the client's layout with its model, the primary the client's bytes."""
    primary, small = await start_fake(), await start_fake()
    server = await start_shadowtap(
        make_config(primary, {"small": {"url": small.url, "model": "llama-3.1-8b"}})
    )
    prompt = {"messages": [{"role": "user", "content": "long \u00e9 \\ " * 60_000}]}
    body = orjson.dumps({**prompt, "model": "gpt-4o"}, option=orjson.OPT_INDENT_2)
    answers = []
    for base in (f"http://127.0.0.1:{server.proxy_port}", primary.url):
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/v1/chat/completions", data=body) as response:
                answers.append((response.status, await response.read()))
    assert answers[0] == answers[1] and answers[0][0] == 200
    await drain(server)
    assert primary.chat_requests()[0].body == body
    sent = small.chat_requests()[0]
    assert sent.json == {**prompt, "model": "llama-3.1-8b"}
    assert int(sent.headers["Content-Length"]) == len(sent.body)  # not chunked: sized upfront
    assert sent.body == body.replace(b'"model": "gpt-4o"', b'"model": "llama-3.1-8b"', 1)


async def test_forward_client_auth_sends_the_client_key_when_configured(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, trusted = await start_fake(), await start_fake()
    config = make_config(primary, {"t": {"url": trusted.url, "forward_client_auth": True}})
    server = await start_shadowtap(config)
    await post(server.proxy_port, CHAT, Authorization="Bearer sk-client-ok")
    await drain(server)
    assert trusted.chat_requests()[0].headers["Authorization"] == "Bearer sk-client-ok"


async def test_failing_candidates_leave_primary_answers_unchanged(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    failing = {b: await start_fake(b) for b in ("hang", "error500", "reset", "garbage")}
    candidates = {name: {"url": fake.url, "timeout_s": 0.5} for name, fake in failing.items()}
    registry = CollectorRegistry()
    server = await start_shadowtap(make_config(primary, candidates), registry)
    direct = await post_direct(primary.url, CHAT)
    for stream in (False, True):
        payload = {**CHAT, "stream": stream}
        results = await asyncio.gather(*(post(server.proxy_port, payload) for _ in range(5)))
        want = await post_direct(primary.url, payload)
        assert all(result == want for result in results)
    assert direct[0] == 200
    await drain(server)

    def outcome(target: str, name: str) -> float | None:
        labels = {"target": target, "outcome": name}
        return registry.get_sample_value("shadowtap_shadow_requests_total", labels)

    assert outcome("hang", "timeout") == 10
    for name in ("error500", "reset", "garbage"):
        assert outcome(name, "error") == 10, name
        assert outcome(name, "ok") == 0
    for name in failing:
        assert registry.get_sample_value("shadowtap_shadow_inflight", {"target": name}) == 0


async def test_over_budget_shadows_are_shed_and_counted(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake()
    slow = await start_fake("slow", delay_s=0.5)
    registry = CollectorRegistry()
    config = make_config(primary, {"slow": slow}, sampling={"max_inflight": 2})
    server = await start_shadowtap(config, registry)
    results = await asyncio.gather(*(post(server.proxy_port, CHAT) for _ in range(10)))
    assert all(status == 200 for status, _ in results)
    await drain(server)
    sent = registry.get_sample_value(
        "shadowtap_shadow_requests_total", {"target": "slow", "outcome": "ok"}
    )
    shed = registry.get_sample_value(
        "shadowtap_shadow_requests_total", {"target": "slow", "outcome": "shed"}
    )
    assert sent == len(slow.chat_requests()) == 2
    assert shed == 8


async def test_streaming_requests_stream_to_candidates_with_ttft(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary = await start_fake("drip", delay_s=0.01)
    candidate = await start_fake("drip", delay_s=0.05)
    registry = CollectorRegistry()
    server = await start_shadowtap(make_config(primary, {"c": candidate}), registry)
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    status, body = await post(server.proxy_port, payload)
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    await drain(server)
    assert candidate.chat_requests()[0].json["stream"] is True
    labels = {"route": "/v1/chat/completions", "target": "c", "role": "candidate"}
    count = registry.get_sample_value("shadowtap_time_to_first_token_seconds_count", labels)
    total = registry.get_sample_value("shadowtap_time_to_first_token_seconds_sum", labels)
    latency = registry.get_sample_value("shadowtap_request_duration_seconds_sum", labels)
    assert count == 1 and 0.04 < total < latency  # the first token came before the last
    tokens = registry.get_sample_value("shadowtap_tokens_total", {"target": "c", "kind": "prompt"})
    assert tokens == 11


async def test_exchange_reaches_the_pipeline_with_every_target(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, good, bad = (
        await start_fake(),
        await start_fake("paraphrase"),
        await start_fake("reset"),
    )
    config = make_config(primary, {"good": good, "bad": bad}, secondary={"rate": 1.0})
    server = await start_shadowtap(config)
    seen = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    await post(server.proxy_port, {**CHAT, "stream": True}, Authorization="Bearer sk-x")
    await drain(server)
    (exchange,) = seen
    assert set(exchange.results) == {"primary", "secondary", "good", "bad"}
    assert exchange.results["secondary"].role == "secondary"
    assert exchange.stream and exchange.model == "gpt-test"
    assert exchange.primary.text == exchange.results["secondary"].completion.text
    assert exchange.primary.ttft_s is not None and exchange.primary.ok
    assert "paraphrase" not in (exchange.primary.text or "")
    assert exchange.results["bad"].completion.error
    assert orjson.loads(exchange.request_body)["stream"] is True
    # the secondary is the client's own provider: it gets the client's credentials by default
    assert primary.chat_requests()[1].headers["Authorization"] == "Bearer sk-x"


async def test_no_inflight_limit_means_no_connection_limit_either(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, slow = await start_fake(), await start_fake("slow", delay_s=0.5)
    registry = CollectorRegistry()
    config = make_config(
        primary, {"slow": {"url": slow.url, "timeout_s": 2}}, sampling={"max_inflight": 0}
    )
    server = await start_shadowtap(config, registry)
    await asyncio.gather(*(post(server.proxy_port, CHAT) for _ in range(20)))
    await drain(server)
    ok = registry.get_sample_value(
        "shadowtap_shadow_requests_total", {"target": "slow", "outcome": "ok"}
    )
    assert ok == 20  # all concurrent, none queued behind a pool into a timeout


async def test_scoring_in_worker_processes(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, same, other = await start_fake(), await start_fake(), await start_fake("paraphrase")
    config = make_config(
        primary,
        {"same": same, "other": other},
        server={"scoring_processes": 1},
        scorers={"sim": {"type": "text_similarity"}},
    )
    server = await start_shadowtap(config)
    seen: list = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    await post(server.proxy_port, CHAT)
    await drain(server)
    (exchange,) = seen
    scores = {score.target: score.score for score in exchange.scores}
    assert scores["same"] == 1.0 and scores["other"] < 0.6


async def test_compressed_answers_are_relayed_as_sent_and_still_scored(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake("gzip"), await start_fake("gzip")
    server = await start_shadowtap(make_config(primary, {"c": candidate}))
    seen: list = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(
            f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions",
            json=CHAT,
            headers={"Accept-Encoding": "gzip"},
        ) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            relayed = await response.read()
    assert relayed[:2] == b"\x1f\x8b"  # still gzip: the client decodes, not the proxy
    await drain(server)
    (exchange,) = seen
    assert exchange.primary.ok and "forty-two" in (exchange.primary.text or "")
    assert exchange.results["c"].completion.text == exchange.primary.text
