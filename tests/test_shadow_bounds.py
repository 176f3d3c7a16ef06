"""Shadow work is bounded in bytes per answer, bytes per second, loop time and memory held.

Hostile candidates are real aiohttp servers on loopback that stream without end; the client
is raw HTTP, and the primary's answers are compared byte for byte with the primary's own.
"""

from __future__ import annotations

import asyncio
import gc
import time
import zlib
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap import shadow
from shadowtap.budget import ADMIT_SHARE

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import CHAT, RecordingSink, drain, post, post_direct

MiB = 1024 * 1024
EVENT = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"more "},"finish_reason":null}]}\n\n'
)


class Endless:
    """A candidate that answers every request with an SSE stream that never ends."""

    def __init__(self, block: bytes = EVENT * 100, content_type: str = "text/event-stream"):
        self.block = block
        self.content_type = content_type
        self.requests = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        await response.prepare(request)
        try:
            while True:
                await response.write(self.block)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


async def start_endless(aiohttp_server: Any, endless: Endless) -> Endless:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", endless.handle)
    server = await aiohttp_server(app)
    endless.url = str(server.make_url("")).rstrip("/")
    return endless


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def shadows(registry: CollectorRegistry, target: str, outcome: str) -> float:
    return sample(registry, "shadowtap_shadow_requests_total", target=target, outcome=outcome)


def decisions(registry: CollectorRegistry, outcome: str) -> float:
    route = "/v1/chat/completions"
    return sample(registry, "shadowtap_sampling_decisions_total", route=route, outcome=outcome)


async def test_an_endless_candidate_is_cut_at_the_answer_cap_and_the_primary_is_untouched(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any
) -> None:
    primary = await start_fake()
    endless = await start_endless(aiohttp_server, Endless())
    registry = CollectorRegistry()
    config = make_config(
        primary,
        {"endless": {"url": endless.url, "timeout_s": 30}},
        # The rate and the share are tested below; here, the cap alone (with them on, a
        # target that just sent 12 MiB owes, and later shadows to it are shed).
        sampling={"max_loop_share": 0, "max_read_bytes_per_second": 0},
    )
    server = await start_shadowtap(config, registry)
    seen: list = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    for stream in (False, True):
        payload = {**CHAT, "stream": stream}
        want = await post_direct(primary.url, payload)
        results = await asyncio.gather(*(post(server.proxy_port, payload) for _ in range(3)))
        assert all(result == want for result in results)  # byte for byte
    await drain(server)
    assert len(seen) == 6
    for exchange in seen:
        assert exchange.primary.ok
        shadow = exchange.results["endless"].completion
        assert shadow.error == "answer cut at 4194304 bytes (max_answer_bytes)"
    assert sample(registry, "shadowtap_answers_cut_total", target="endless", kind="size") == 6
    read = sample(registry, "shadowtap_answer_bytes_total", target="endless")
    assert 6 * 4 * MiB <= read <= 6 * (4 * MiB + 4096)


async def test_shadows_read_no_faster_than_the_byte_rate(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any
) -> None:
    primary = await start_fake()
    endless = await start_endless(aiohttp_server, Endless())
    registry = CollectorRegistry()
    config = make_config(
        primary,
        {"endless": {"url": endless.url, "timeout_s": 1.0}},
        sampling={"max_answer_bytes": MiB, "max_read_bytes_per_second": 256 * 1024},
    )
    server = await start_shadowtap(config, registry)
    started = time.monotonic()
    for _ in range(4):
        assert (await post(server.proxy_port, CHAT))[0] == 200
        await asyncio.sleep(0.2)  # time for the last shadow to read its burst
    await drain(server)
    elapsed = time.monotonic() - started
    read = sample(registry, "shadowtap_answer_bytes_total", target="endless")
    # One answer's burst, then the rate; the last chunk read may overdraw by one chunk.
    assert read <= MiB + 256 * 1024 * elapsed + MiB, (read, elapsed)
    sent = shadows(registry, "endless", "error")
    shed = shadows(registry, "endless", "shed")
    timeout = shadows(registry, "endless", "timeout")
    assert sent + shed + timeout == 4 and shed >= 1  # in debt: later shadows were not sent
    assert endless.requests == sent + timeout


async def test_a_candidate_that_takes_the_loop_is_shed_and_the_others_are_not(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any
) -> None:
    primary, healthy = await start_fake(), await start_fake()
    # Blank lines are the costliest bytes to parse (one Python call each).
    blank = await start_endless(aiohttp_server, Endless(block=b"\n" * 65536))
    registry = CollectorRegistry()
    config = make_config(
        primary,
        {"blank": {"url": blank.url, "timeout_s": 1.0}, "healthy": healthy},
        sampling={"max_loop_share": 0.001},
    )
    server = await start_shadowtap(config, registry)
    for _ in range(5):
        assert (await post(server.proxy_port, CHAT))[0] == 200
        await asyncio.sleep(0.1)  # time for the last shadow to spend its burst
    await drain(server)
    assert shadows(registry, "blank", "shed") >= 3
    assert shadows(registry, "healthy", "ok") == 5
    assert sample(registry, "shadowtap_shadow_throttled_seconds_total", target="blank") > 0


async def test_a_gzip_bomb_is_cut_at_the_cap_a_slice_at_a_time(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any
) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    bomb = compressor.compress(b"0" * (64 * MiB)) + compressor.flush()  # ~65 kB on the wire

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return web.Response(body=bomb, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    bomber = await aiohttp_server(app)
    primary = await start_fake()
    registry = CollectorRegistry()
    url = str(bomber.make_url("")).rstrip("/")
    server = await start_shadowtap(make_config(primary, {"bomb": url}), registry)
    seen: list = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    assert (await post(server.proxy_port, CHAT))[0] == 200
    await drain(server)
    assert seen[0].results["bomb"].completion.error.startswith("answer cut at 4194304 bytes")
    assert sample(registry, "shadowtap_answers_cut_total", target="bomb", kind="size") == 1


async def test_a_request_over_max_body_bytes_is_not_sampled_and_is_counted(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    registry = CollectorRegistry()
    config = make_config(primary, {"c": candidate}, sampling={"max_body_bytes": 2000})
    server = await start_shadowtap(config, registry)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    status, body = await post(server.proxy_port, big)
    assert (status, body) == await post_direct(primary.url, big)
    assert (await post(server.proxy_port, CHAT))[0] == 200
    await drain(server)
    assert decisions(registry, "too_large") == 1
    assert decisions(registry, "sampled") == 1
    assert [r.json["messages"] for r in candidate.chat_requests()] == [CHAT["messages"]]


def held(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("shadowtap_held_bytes")
    assert value is not None
    return value


async def test_memory_budget_sheds_once_full_counts_it_and_gets_every_byte_back(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, slow = await start_fake(), await start_fake("slow", delay_s=0.3)
    registry = CollectorRegistry()
    config = make_config(primary, {"slow": slow}, sampling={"max_held_bytes": MiB})
    server = await start_shadowtap(config, registry)
    prompt = {**CHAT, "messages": [{"role": "user", "content": "y" * 200_000}]}
    want = await post_direct(primary.url, prompt)
    for _ in range(2):  # twice: the bytes of the first round came back for the second
        results = await asyncio.gather(*(post(server.proxy_port, prompt) for _ in range(8)))
        assert all(result == want for result in results)
        assert held(registry) > 0
        await drain(server)
        assert held(registry) == 0
    shed, sampled = decisions(registry, "memory"), decisions(registry, "sampled")
    assert sampled >= 2 and shed >= 2 and sampled + shed == 16
    assert shadows(registry, "slow", "shed") == shed
    assert len(slow.chat_requests()) == sampled


async def test_no_byte_is_kept_after_failures_disconnects_and_cancellation(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any
) -> None:
    primary = await start_fake("drip", delay_s=0.01)
    failing = {b: await start_fake(b) for b in ("error500", "reset", "garbage", "hang")}
    endless = await start_endless(aiohttp_server, Endless())
    candidates: dict[str, Any] = {n: {"url": f.url, "timeout_s": 0.5} for n, f in failing.items()}
    candidates["endless"] = {"url": endless.url, "timeout_s": 0.5}
    registry = CollectorRegistry()
    config = make_config(primary, candidates, sampling={"max_answer_bytes": 256 * 1024})
    server = await start_shadowtap(config, registry)
    url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
    for stream in (False, True) * 5:
        assert (await post(server.proxy_port, {**CHAT, "stream": stream}))[0] == 200
    async with aiohttp.ClientSession() as session:  # clients that leave mid-answer
        for _ in range(5):
            async with session.post(url, json={**CHAT, "stream": True}) as response:
                await response.content.readany()
    await drain(server)
    assert held(registry) == 0

    # The primary fails: unreachable, then answering 500.
    down_registry = CollectorRegistry()
    down = await start_shadowtap(make_config("http://127.0.0.1:9", candidates), down_registry)
    assert (await post(down.proxy_port, CHAT))[0] == 502
    await drain(down)
    assert held(down_registry) == 0
    broken = await start_fake("error500")
    failed_registry = CollectorRegistry()
    failed = await start_shadowtap(make_config(broken, candidates), failed_registry)
    assert (await post(failed.proxy_port, CHAT))[0] == 500
    await drain(failed)
    assert held(failed_registry) == 0

    # Shutdown cancels shadows still running: their bytes come back too.
    hang = await start_fake("hang")
    stopping_registry = CollectorRegistry()
    stopping = await start_shadowtap(
        make_config(
            primary, {"hang": {"url": hang.url, "timeout_s": 60}}, server={"shutdown_grace_s": 0.2}
        ),
        stopping_registry,
    )
    assert (await post(stopping.proxy_port, CHAT))[0] == 200
    assert held(stopping_registry) > 0
    await stopping.stop()
    assert held(stopping_registry) == 0


async def test_scorers_see_the_request_but_the_exchange_does_not_keep_it_parsed(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    scorers = {"schema": {"type": "json_schema_valid"}}
    config = make_config(primary, {"c": candidate}, scorers=scorers)
    server = await start_shadowtap(config)
    seen: list = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    await post(server.proxy_port, {**CHAT, "response_format": response_format})
    await drain(server)
    (exchange,) = seen
    assert exchange.request_json is None  # parsed for the scorers, then dropped
    assert orjson.loads(exchange.request_body)["response_format"] == response_format
    scores = {score.target: score for score in exchange.scores}
    assert scores["c"].score == 0.0  # the answer is prose: applicable, and invalid


async def test_the_recorded_request_body_is_still_the_json_object(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Any
) -> None:
    import duckdb

    primary, candidate = await start_fake(), await start_fake()
    db = tmp_path / "t.duckdb"
    config = make_config(primary, {"c": candidate}, storage={"enabled": True, "path": str(db)})
    server = await start_shadowtap(config)
    await post(server.proxy_port, CHAT)
    await drain(server)
    await server.stop()
    con = duckdb.connect(str(db), read_only=True)
    kinds = con.execute("SELECT json_type(request_body), request_body->>'model' FROM exchanges")
    assert kinds.fetchall() == [("OBJECT", "gpt-test")]
    con.close()


async def test_a_request_whose_model_is_replaced_in_its_bytes_is_charged_no_copy(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """A candidate that sets its model gets the client's bytes around the new value, not a
    re-encoded copy; the admission used to charge that copy anyway (3x the body, not 2x) and
    shed a request that fits. Charged 2x: sampled, and every byte comes back."""
    primary, candidate = await start_fake(), await start_fake()
    prompt = {**CHAT, "messages": [{"role": "user", "content": "y" * 200_000}]}
    size = len(orjson.dumps(prompt))
    # New exchanges are admitted below ADMIT_SHARE of the limit: 2.5x the body, between 2x and 3x.
    limit = int(size * 2.5 / ADMIT_SHARE)
    registry = CollectorRegistry()
    config = make_config(
        primary,
        {"c": {"url": candidate.url, "model": "small"}},
        sampling={"max_held_bytes": limit},
    )
    server = await start_shadowtap(config, registry)
    assert await post(server.proxy_port, prompt) == await post_direct(primary.url, prompt)
    await drain(server)
    assert (decisions(registry, "sampled"), decisions(registry, "memory")) == (1, 0)
    assert [r.json for r in candidate.chat_requests()] == [{**prompt, "model": "small"}]
    assert held(registry) == 0


def parsed_prompts(marker: str) -> int:
    """Parsed `messages` lists whose one message says `marker`: what of a parsed request is
    still alive (a list is always tracked by the GC; a dict of strings may not be)."""
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj) is list
        and len(obj) == 1
        and type(obj[0]) is dict
        and obj[0].get("content") == marker
    )


@pytest.mark.parametrize("translated", [False, True])
async def test_a_parsed_request_is_dropped_before_the_primary_answers_unless_a_target_reads_it(
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    translated: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sampler parses a request to decide; a 1 MB prompt's parse is ~1-12 MB. Only a
    target that translates builds its body from it: else it is gone before the primary is
    forwarded, not held through the shadows' head start (here as long as the slow primary
    takes), and the exchange has its model and stream all the same."""
    monkeypatch.setattr(shadow, "PRIMARY_HEAD_START_S", 5.0)
    primary, candidate = await start_fake("slow", delay_s=0.6), await start_fake()
    target: dict[str, Any] = {"url": candidate.url}
    if translated:
        target |= {"model": "claude-x", "dialect": "anthropic-messages"}
    server = await start_shadowtap(make_config(primary, {"c": target}))
    seen: list = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    marker = f"a prompt only this test sends ({translated})"
    body = orjson.dumps({**CHAT, "stream": True, "messages": [{"role": "user", "content": marker}]})
    url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"

    async def alive_while_the_primary_thinks() -> int:
        await asyncio.sleep(0.3)
        assert not seen  # nothing answered or recorded yet
        # One parse is the primary's own (the fake's handler holds it while it sleeps).
        return parsed_prompts(marker) - 1

    async with aiohttp.ClientSession() as session:
        sending = session.post(url, data=body, headers={"Content-Type": "application/json"})
        response, alive = await asyncio.gather(sending, alive_while_the_primary_thinks())
        assert response.status == 200
        await response.read()
    assert alive == (1 if translated else 0)
    await drain(server)
    (exchange,) = seen
    assert (exchange.model, exchange.stream) == (CHAT["model"], True)
    assert parsed_prompts(marker) == 0


async def test_an_exchange_cancelled_behind_its_primary_gives_everything_back_not_the_answer(
    start_fake: StartFake, start_shadowtap: StartShadowtap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shadows wait behind their primary (the head start, here longer than the stream).
    An exchange cancelled meanwhile (a stop's teardown racing the primary's end) gives back
    its shadow slots and held bytes, sends no shadow, and the client's stream goes on whole."""
    monkeypatch.setattr(shadow, "PRIMARY_HEAD_START_S", 30.0)
    primary, candidate = await start_fake("drip", delay_s=0.05), await start_fake()
    registry = CollectorRegistry()
    server = await start_shadowtap(make_config(primary, {"c": candidate}), registry)
    budget = server.handler.shadowing.budget
    asked = {**CHAT, "stream": True}

    async def cancel_the_exchange() -> None:
        await asyncio.sleep(0.15)  # the stream is under way; the shadow waits behind it
        assert (budget.inflight, held(registry) > 0, len(server.exchange_tasks)) == (1, True, 1)
        await server.exchange_tasks.cancel_all()

    answered, _ = await asyncio.gather(post(server.proxy_port, asked), cancel_the_exchange())
    assert answered == await post_direct(primary.url, asked)
    assert (budget.inflight, held(registry), candidate.chat_requests()) == (0, 0, [])


async def test_the_header_values_an_exchange_keeps_are_held_against_the_memory_budget(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    # Kept until recorded, as long as a client makes them: 128 headers of up to 8 KiB each.
    primary, candidate = await start_fake(), await start_fake()
    config = make_config(primary, {"c": candidate}, report={"slice_by": ["header:x-tenant"]})
    server = await start_shadowtap(config)
    seen: list = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    # (Within MAX_CREDENTIAL_CHARS: a request over it is not shadowed, see below.)
    headers = [("Authorization", f"Bearer {i:03d}" + "k" * 7000) for i in range(4)]
    headers.append(("X-Tenant", "t" * 8000))
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
        async with session.post(url, json=CHAT, headers=headers) as response:
            assert response.status == 200
            await response.read()
    await drain(server)
    (exchange,) = seen
    kept = [*exchange.slice_headers.values(), *exchange.credentials]
    assert sum(map(len, kept)) > 2 * 4 * 7000 + 8000  # each key whole, and its token
    assert exchange.held_bytes >= sum(map(len, kept)) + len(exchange.request_body)


async def test_a_request_with_more_credentials_than_are_scrubbed_is_relayed_not_shadowed(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    # Each stored text is searched for each value (`ExactSecrets`): the 60,120 values of 120
    # cookie headers kept the recorder's thread busy for hours. Such a request is relayed only.
    primary, candidate = await start_fake(), await start_fake()
    registry = CollectorRegistry()
    server = await start_shadowtap(make_config(primary, {"c": candidate}), registry)
    seen: list = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    cookies = ";".join(f"c{i}=value-{i:04d}" for i in range(shadow.MAX_CREDENTIALS + 1))
    many = {
        "counted": [("Cookie", cookies)],
        "long": [("Authorization", f"Bearer {i}" + "k" * 8000) for i in range(9)],
        "few": [("Authorization", "Bearer tok3n-of-the-client"), ("Cookie", cookies[:200])],
    }
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions"
        for headers in many.values():
            want = await post_direct(primary.url, CHAT)
            async with session.post(url, json=CHAT, headers=headers) as response:
                assert (response.status, await response.read()) == want
    await drain(server)
    assert len(seen) == 1 and "tok3n-of-the-client" in seen[0].credentials
    # The two dropped ones are counted, as shed shadows are, and never reach the candidate.
    assert shadows(registry, "c", "shed") == 2 and len(candidate.chat_requests()) == 1
