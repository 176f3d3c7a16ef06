"""The sampled path since its exchange is opened in a task of its own (`Shadowing.mirror`):
clients that leave, bursts over the shadow budget, the order requests reach the wire, and a
HEAD answer that carries more than its head. Each drives the proxy end to end on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap.recorder import open_readonly
from shadowtap.redact import CREDENTIAL_PLACEHOLDER
from shadowtap.tasks import TaskSet

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import CHAT, RecordingSink, drain, post, post_direct
from tests.waiting import eventually

ROUTE = "/v1/chat/completions"
REQUEST = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"


def stored(path: Path) -> dict[str, dict[str, Any]]:
    """Each stored response by target, for a file holding one exchange."""
    con = open_readonly(path)
    try:
        rows = con.execute(
            "SELECT e.request_id, r.target, r.status, r.error FROM exchanges e"
            " JOIN responses r USING (request_id)"
        ).fetchall()
    finally:
        con.close()
    assert len({row[0] for row in rows}) == 1, rows
    return {target: {"status": status, "error": error} for _, target, status, error in rows}


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def recording(tmp_path: Path) -> dict[str, Any]:
    return {"enabled": True, "path": str(tmp_path / "db.duckdb"), "flush_interval_ms": 20}


async def nothing_held(server: Any, registry: CollectorRegistry) -> None:
    await drain(server)
    assert server.handler.budget.inflight == 0
    assert gauge(registry, "shadowtap_shadow_inflight", target="c") == 0
    await eventually(lambda: gauge(registry, "shadowtap_held_bytes") == 0)


async def test_a_client_gone_before_the_primarys_head_still_has_its_exchange_recorded(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake("hang"), await start_fake()
    registry = CollectorRegistry()
    config = make_config(primary, {"c": candidate}, storage=recording(tmp_path))
    server = await start_shadowtap(config, registry)
    body = orjson.dumps(CHAT)
    _, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    writer.write(REQUEST % (ROUTE.encode(), len(body)) + body)
    await eventually(lambda: primary.chat_requests() and candidate.chat_requests())
    writer.close()  # the primary is still thinking: no head yet
    await nothing_held(server, registry)
    await server.stop()
    rows = stored(tmp_path / "db.duckdb")
    assert rows["primary"] == {"status": None, "error": "client disconnected"}
    assert rows["c"] == {"status": 200, "error": None}  # the shadow ran to its end


async def test_a_client_gone_mid_stream_still_has_its_exchange_recorded(
    tmp_path: Path, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake("drip", delay_s=0.05), await start_fake()
    registry = CollectorRegistry()
    config = make_config(primary, {"c": candidate}, storage=recording(tmp_path))
    server = await start_shadowtap(config, registry)
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"http://127.0.0.1:{server.proxy_port}{ROUTE}", json={**CHAT, "stream": True}
        )
        assert response.status == 200
        assert (await response.content.readany()).startswith(b"data: ")
        response.close()  # hang up mid-answer
    await eventually(lambda: primary.disconnects == 1)
    await nothing_held(server, registry)
    await server.stop()
    rows = stored(tmp_path / "db.duckdb")
    assert rows["primary"] == {"status": 200, "error": "client disconnected"}
    assert rows["c"] == {"status": 200, "error": None}


async def test_a_burst_over_a_small_shadow_budget_never_drives_it_negative_nor_leaks_it(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    """200 sampled requests at once, two shadow targets (one failing), room for 2 shadows."""
    primary = await start_fake()
    slow, reset = await start_fake("slow", delay_s=0.01), await start_fake("reset")
    registry = CollectorRegistry()
    config = make_config(primary, {"c": slow, "r": reset}, sampling={"max_inflight": 2})
    server = await start_shadowtap(config, registry)
    budget = server.handler.budget
    seen: set[int] = set()
    watching = True

    async def watch() -> None:
        while watching:
            seen.add(budget.inflight)
            await asyncio.sleep(0)

    watcher = TaskSet().spawn(watch(), name="watch-inflight")
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> tuple[int, bytes]:
            payload = {**CHAT, "user": f"u{i}"}
            url = f"http://127.0.0.1:{server.proxy_port}{ROUTE}"
            async with session.post(url, json=payload) as response:
                return response.status, await response.read()

        answers = await asyncio.gather(*(one(i) for i in range(200)))
    await drain(server)
    watching = False
    await watcher
    assert {status for status, _ in answers} == {200}
    assert min(seen) >= 0 and max(seen) <= 2, sorted(seen)
    assert budget.inflight == 0

    def shadows(target: str, outcome: str) -> float:
        labels = {"target": target, "outcome": outcome}
        return registry.get_sample_value("shadowtap_shadow_requests_total", labels) or 0.0

    sent_c, sent_r = len(slow.chat_requests()), len(reset.chat_requests())
    assert shadows("c", "ok") == sent_c and shadows("r", "error") == sent_r
    assert shadows("c", "ok") + shadows("c", "shed") == 200
    assert shadows("r", "error") + shadows("r", "shed") == 200
    assert shadows("c", "shed") > 0 and shadows("r", "shed") > 0
    for target in ("c", "r"):
        assert gauge(registry, "shadowtap_shadow_inflight", target=target) == 0
    await eventually(lambda: gauge(registry, "shadowtap_held_bytes") == 0)
    assert len(primary.chat_requests()) == 200


class Arrivals:
    """A raw HTTP/1.1 upstream on loopback that notes, in one list shared with others, the
    moment each request's head arrived: (its name, the request's `user`)."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self.name = name
        self.log = log
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.log.append((self.name, orjson.loads(body)["user"]))
                answer = orjson.dumps(
                    {"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def arrivals() -> AsyncIterator[tuple[Arrivals, Arrivals, list[tuple[str, str]]]]:
    log: list[tuple[str, str]] = []
    upstreams = Arrivals("primary", log), Arrivals("candidate", log)
    servers = []
    for upstream in upstreams:
        server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        servers.append(server)
    yield upstreams[0], upstreams[1], log
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])
async def test_the_primary_gets_each_sampled_request_before_the_candidate(
    arrivals: tuple[Arrivals, Arrivals, list[tuple[str, str]]], start_shadowtap: StartShadowtap
) -> None:
    primary, candidate, log = arrivals
    server = await start_shadowtap(make_config(primary.url, {"c": candidate.url}))
    users = [f"u{i}" for i in range(50)]
    async with aiohttp.ClientSession() as session:
        for user in users:  # the first on new connections, the rest on kept ones
            url = f"http://127.0.0.1:{server.proxy_port}{ROUTE}"
            async with session.post(url, json={**CHAT, "user": user}) as response:
                assert response.status == 200
                await response.read()
    await drain(server)
    assert len(log) == 100
    for user in users:
        assert log.index(("primary", user)) < log.index(("candidate", user)), user


FORGED = b"HTTP/1.1 299 Forged\r\nX-Which: forged\r\nContent-Length: 0\r\n\r\n"


class HeadPrimary:
    """A raw primary whose answer to `HEAD /bad` goes on past its head: `how` is "same" (the
    bytes of a forged answer in the head's own write), "later" (they come once the answer was
    relayed: on an idle connection) or "endless" (bytes until the connection closes). Any
    other HEAD is answered with its path in `X-Which`."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.relayed = asyncio.Event()
        self.accepted = 0
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                path = head.split(b" ", 2)[1]
                answer = b"HTTP/1.1 200 OK\r\nX-Which: %s\r\nContent-Length: %d\r\n\r\n"
                writer.write(answer % (path, len(FORGED)))
                if path == b"/bad":
                    await self.misbehave(writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def misbehave(self, writer: asyncio.StreamWriter) -> None:
        if self.how == "same":
            writer.write(FORGED)
        elif self.how == "later":
            await writer.drain()
            await self.relayed.wait()
            writer.write(FORGED)
        else:
            while True:
                writer.write(b"x" * 4096)
                await writer.drain()
                await asyncio.sleep(0.001)


@pytest.mark.parametrize("how", ["same", "later", "endless"])
async def test_bytes_after_a_head_answer_never_become_the_next_requests_answer(
    how: str, start_shadowtap: StartShadowtap
) -> None:
    primary = HeadPrimary(how)
    upstream = await asyncio.start_server(primary.serve, "127.0.0.1", 0)
    primary.url = f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
    try:
        server = await start_shadowtap(make_config(primary.url))
        base = f"http://127.0.0.1:{server.proxy_port}"
        async with aiohttp.ClientSession() as session:
            async with session.head(base + "/bad") as bad:
                if how == "endless":  # aiohttp's client reads the bytes as a broken answer
                    assert bad.status == 502
                else:
                    assert (bad.status, bad.headers["X-Which"]) == (200, "/bad")
            primary.relayed.set()
            await asyncio.sleep(0.1)  # the late bytes reach the proxy's idle connection
            for path in ("/next", "/then"):
                async with session.head(base + path) as after:
                    assert (after.status, after.headers.get("X-Which")) == (200, path)
    finally:
        upstream.close()
        await upstream.wait_closed()


class EndlessJudge:
    """An LLM judge whose answer starts like one and never ends (up to `LIMIT` bytes, then it
    stalls) while `endless`; a tie verdict once not. `written` counts what it sent."""

    LIMIT = 64 * 1024 * 1024

    def __init__(self) -> None:
        self.endless = True
        self.written = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        if not self.endless:
            reply = orjson.dumps({"winner": "tie", "rationale": "alike"}).decode()
            return web.json_response({"choices": [{"message": {"content": reply}}]})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        opening = b'{"choices": [{"message": {"content": "'
        await response.write(opening)
        self.written += len(opening)
        chunk = b"x" * 65536
        try:
            while self.written < self.LIMIT:
                await response.write(chunk)
                self.written += len(chunk)
            await asyncio.sleep(3600)  # never ends; the scorer's timeout_s ends the call
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response


async def test_an_endless_judge_answer_is_not_read_past_a_cap_and_the_next_is_its_own(
    aiohttp_server: Any, start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    judge = EndlessJudge()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", judge.handle)
    judge_url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    primary, candidate = await start_fake(), await start_fake("paraphrase")
    judging = {"url": judge_url, "model": "j", "timeout_s": 3, "max_per_second": 100}
    scorers = {"j": {"type": "llm_judge", **judging}}
    server = await start_shadowtap(make_config(primary, {"c": candidate}, scorers=scorers))
    seen: list[Any] = []
    server.handler.pipeline.sinks.append(RecordingSink(seen))
    want = await post_direct(primary.url, CHAT)
    assert await post(server.proxy_port, CHAT) == want
    await drain(server)
    (endless,) = seen[0].scores
    assert endless.score is None and "more than" in (endless.error or ""), endless
    assert judge.written < EndlessJudge.LIMIT  # hung up at the cap, not at the timeout
    judge.endless = False
    assert await post(server.proxy_port, CHAT) == want
    await drain(server)
    (verdict,) = seen[1].scores
    assert verdict.error is None and verdict.score == 1.0 and verdict.detail["verdict"] == "tie"


async def echo_everything(request: web.Request) -> web.Response:
    """A primary that quotes the request's whole target and every header value back in its
    answer, as some error messages do: the recorder gets every credential to scrub."""
    await request.read()
    quoted = " ".join([request.path_qs, *request.headers.values()])
    answer = {"object": "chat.completion", "choices": [{"message": {"content": quoted}}]}
    return web.json_response(answer)


CANARIES = {
    "Authorization": "Bearer sk-canary-bearer-7q2z",
    "Api-Key": "canary-azure-key-5w8",
    "X-Api-Key": "canary-anthropic-key-3k1",
    "Cookie": "session=canary-cookie-9d4x; theme=dark",
}
NAMES = ["api_key", "key", "access_token", "token", "client_secret", "sig", "password"]
QUERY_SECRETS = {name + str(i): f"canary-{name}-{i}-q9z" for i in range(30) for name in NAMES}
LEAKS = [
    *QUERY_SECRETS.values(),
    "sk-canary-bearer-7q2z",
    "canary-azure-key-5w8",
    "canary-anthropic-key-3k1",
    "canary-cookie-9d4x",
]
TARGET = ROUTE + "?" + "&".join(f"{name}={value}" for name, value in QUERY_SECRETS.items())


async def test_a_query_full_of_credentials_and_a_hundred_headers_leave_no_secret_behind(
    tmp_path: Path,
    aiohttp_server: Any,
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = web.Application()
    app.router.add_post(ROUTE, echo_everything)
    primary_url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    candidate = await start_fake("reject_key")  # quotes the key it got in its error
    store = tmp_path / "store"
    config = make_config(
        primary_url,
        {"c": {"url": candidate.url, "forward_client_auth": True}},
        storage={"enabled": True, "path": str(store / "db.duckdb"), "flush_interval_ms": 20},
    )
    server = await start_shadowtap(config)
    # 110 fillers: with the credentials and the client's own, under aiohttp's 128 a request.
    headers = {f"X-Filler-{i}": f"value-{i}" for i in range(110)} | CANARIES
    async with aiohttp.ClientSession() as session:
        with structlog.testing.capture_logs() as logs:
            async with session.post(
                f"http://127.0.0.1:{server.proxy_port}{TARGET}", json=CHAT, headers=headers
            ) as response:
                relayed = response.status, await response.read()
            await drain(server)
        async with session.post(primary_url + TARGET, json=CHAT, headers=headers) as direct:
            assert direct.status == 200
            want = orjson.loads(await direct.read())["choices"][0]["message"]["content"]
    assert relayed[0] == 200
    got = orjson.loads(relayed[1])["choices"][0]["message"]["content"]
    # The primary got the client's target and every header (the proxy adds X-Forwarded-For).
    assert got.split(" ")[0] == want.split(" ")[0] == TARGET
    assert set(want.split(" ")) <= set(got.split(" "))
    assert all(leak in got for leak in LEAKS)
    assert candidate.chat_requests()[0].headers["Authorization"] == CANARIES["Authorization"]
    await server.stop()
    stored = every_stored_value(store / "db.duckdb")
    raw = b"".join(p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file())
    assert "value-109" in stored and b"value-109" in raw  # the echo was stored, scrubbed
    assert any(event["event"] == "shadow" for event in logs)
    for leak in LEAKS:
        assert leak not in stored, leak
        assert leak.encode() not in raw, leak
        assert leak not in repr(logs) and leak not in caplog.text, leak


async def test_thousands_of_headers_are_refused_and_the_proxy_goes_on(
    start_fake: StartFake, start_shadowtap: StartShadowtap, caplog: pytest.LogCaptureFixture
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    server = await start_shadowtap(make_config(primary, {"c": candidate}))
    headers = {f"X-Filler-{i}": f"value-{i}" for i in range(3000)} | CANARIES
    url = f"http://127.0.0.1:{server.proxy_port}{TARGET}"
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=CHAT, headers=headers) as refused:
                assert refused.status == 400
            async with session.post(url, json=CHAT, headers=CANARIES) as after:
                assert after.status == 200
                assert (await after.json())["object"] == "chat.completion"
        await drain(server)
    assert len(primary.chat_requests()) == len(candidate.chat_requests()) == 1
    assert "Too many headers" in caplog.text  # aiohttp's log of the refusal was scanned
    assert any(event["event"] == "shadow" for event in logs)
    for leak in LEAKS:
        assert leak not in repr(logs) and leak not in caplog.text, leak


def every_stored_value(path: Path) -> str:
    con = open_readonly(path)
    try:
        tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
        rows = [row for t in tables for row in con.execute(f"SELECT * FROM {t}").fetchall()]
        return "\n".join(str(value) for row in rows for value in row)
    finally:
        con.close()


async def test_a_credential_that_is_not_utf8_costs_no_record_and_is_scrubbed(
    tmp_path: Path, aiohttp_server: Any, start_shadowtap: StartShadowtap
) -> None:
    """aiohttp hands header bytes that are not UTF-8 over as lone surrogates: such a key was
    taken as a credential as is, and the recorder failed on it (its percent-encoded form)."""
    app = web.Application()
    app.router.add_post(ROUTE, echo_everything)
    primary_url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    store = tmp_path / "store"
    config = make_config(
        primary_url,
        storage={"enabled": True, "path": str(store / "db.duckdb"), "flush_interval_ms": 20},
        secondary={"rate": 1.0},  # a shadow (the primary's own API) so the request is sampled
    )
    server = await start_shadowtap(config)
    body = orjson.dumps(CHAT)
    keys = [b"sk-canary-plain-1", b"sk-\xff\xfecanary-bytes-2", b"sk-canary-plain-3"]
    for key in keys:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (ROUTE.encode(), key, len(body), body)
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        writer.close()
        await drain(server)
    await server.stop()
    con = open_readonly(store / "db.duckdb")
    try:
        assert con.execute("SELECT count(*) FROM exchanges").fetchone() == (3,)
    finally:
        con.close()
    stored = every_stored_value(store / "db.duckdb")
    raw = b"".join(p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file())
    assert stored.count(CREDENTIAL_PLACEHOLDER) >= 3  # each echo was stored, scrubbed
    for leak in ("canary-plain-1", "canary-bytes-2", "canary-plain-3"):
        assert leak not in stored and leak.encode() not in raw, leak
