"""What `bench/abuse.py` does to a proxy beside the probe, and the list of cases.

Every attack is bounded in count and time, and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import orjson

from bench.abuse_cases import CORPUS_STORED, UNRESOLVABLE, Abuse, Case, CaseRun, chat, send
from bench.abuse_fakes import CANARY
from bench.harness import PATH, free_port, memory_kb

SLOWLORIS = 500  # connections sending their headers one byte every few seconds
IDLE_PROXY = 1000  # connections that send nothing, to the proxy port
IDLE_ADMIN = 1100  # ... and to the admin port: more than a 1,024-file limit on their own
PROXY_FILE_LIMIT = 1024  # the connections case starts its proxy with this soft limit
TRICKLE_S = 5.0
NESTED = 70  # more than the default 64 shadows in flight, so a leaked budget shows
DEPTH = 1000


class Connections(Abuse):
    """Slowloris and idle connections on both listeners, held `--hold` seconds."""

    def __init__(self) -> None:
        self.opened = 0.0
        self.closed: dict[str, list[float]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.stop = asyncio.Event()

    async def hold(self, kind: str, port: int, trickle: bool) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError):
            self.closed.setdefault(kind + " not accepted in 10 s", []).append(0.0)
            return
        eof = asyncio.ensure_future(reader.read(1024))  # done when the server closes or answers
        stop = asyncio.ensure_future(self.stop.wait())
        try:
            if trickle:
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            while not eof.done() and not stop.done():
                if trickle:
                    writer.write(b"a")
                await asyncio.wait({eof, stop}, timeout=TRICKLE_S, return_when="FIRST_COMPLETED")
            if eof.done():
                self.closed.setdefault(kind, []).append(time.monotonic() - self.opened)
        except OSError:
            self.closed.setdefault(kind, []).append(time.monotonic() - self.opened)
        finally:
            for future in (eof, stop):
                future.cancel()
            writer.close()

    async def start(self, run: CaseRun, args: argparse.Namespace) -> None:
        self.opened = time.monotonic()
        plan = [
            ("slowloris", run.port, True, SLOWLORIS),
            ("idle proxy", run.port, False, IDLE_PROXY),
            ("idle admin", run.admin, False, IDLE_ADMIN),
        ]
        for kind, port, trickle, count in plan:
            for _ in range(count):
                self.tasks.append(asyncio.ensure_future(self.hold(kind, port, trickle)))
            await asyncio.sleep(0.2)

    async def finish(self, run: CaseRun, args: argparse.Namespace) -> None:
        await asyncio.sleep(max(0.0, self.opened + args.hold - time.monotonic()))
        self.stop.set()
        await asyncio.gather(*self.tasks)
        for kind, count in (
            ("slowloris", SLOWLORIS),
            ("idle proxy", IDLE_PROXY),
            ("idle admin", IDLE_ADMIN),
        ):
            times = sorted(self.closed.get(kind, []))
            when = f" (median at {times[len(times) // 2]:.0f} s)" if times else ""
            run.notes.append(
                f"{kind} closed by proxy {len(times)}/{count} in {args.hold:g} s{when}"
            )
        for kind, times in self.closed.items():
            if kind.endswith("in 10 s"):
                run.notes.append(f"{kind}: {len(times)}")


class Corpus(Abuse):
    """Odd but possible requests, once, during the case's first probe window."""

    async def start(self, run: CaseRun, args: argparse.Namespace) -> None:
        run.checks = CORPUS_STORED

    async def window(self, run: CaseRun, args: argparse.Namespace, index: int) -> None:
        if index:
            return
        async with aiohttp.ClientSession() as session:
            stats = await candidate_stats(session, run)
            items = {
                "empty body, other route": (b"", "/v1/batches/b1/cancel", {}),
                "empty body, chat route": (b"", PATH, {}),
                "invalid JSON": (b'{"model": "bench", "messages": [', PATH, {}),
                "non-object JSON": (b"[1, 2, 3]", PATH, {}),
                "non-string model": (
                    orjson.dumps(
                        {
                            "model": 123,
                            "messages": [{"role": "user", "content": "corpus-model-int"}],
                        }
                    ),
                    PATH,
                    {},
                ),
                'stream "false"': (
                    orjson.dumps(
                        {
                            "model": "bench",
                            "stream": "false",
                            "messages": [{"role": "user", "content": "corpus-stream-false"}],
                        }
                    ),
                    PATH,
                    {},
                ),
                "huge header (100 kB)": (chat("h", False), PATH, {"X-Huge": "h" * 100_000}),
                "query-string credential": (
                    chat("q", False),
                    PATH + f"?api_key={CANARY}&key={CANARY}",
                    {"Authorization": f"Bearer {CANARY}"},
                ),
            }
            for number, (name, (body, path, headers)) in enumerate(items.items()):
                outcome = await send(
                    session, run, f"corpus-{number}", body, path=path, headers=headers
                )
                run.corpus.append((name, outcome))
            run.corpus.append(("absolute-form target", await absolute_form(run)))
            await asyncio.sleep(1.0)  # let the shadows of the items arrive
            after = await candidate_stats(session, run)
            run.corpus.append(
                ("candidate saw the credential", f"{after['canary'] - stats['canary']} times")
            )


async def absolute_form(run: CaseRun) -> str:
    """`POST http://authority/path` (RFC 9112 absolute-form): the configured primary, or 400."""
    body = chat("absolute", False)
    reader, writer = await asyncio.open_connection("127.0.0.1", run.port)
    head = (
        f"POST http://127.0.0.1:1{PATH} HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
        f"X-Bench-Id: absolute\r\nX-Bench-Stream: 0\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    try:
        answer = await asyncio.wait_for(reader.read(), 30)
    except TimeoutError:
        return "no answer in 30 s"
    finally:
        writer.close()
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "?"
    from bench.abuse_fakes import primary_answer

    same = answer.endswith(primary_answer("absolute", False))
    return f"status {status}" + (", the primary's answer" if same else "")


async def candidate_stats(session: aiohttp.ClientSession, run: CaseRun) -> dict[str, int]:
    async with session.get(run.candidate_stats) as response:
        return await response.json()


class Nested(Abuse):
    """70 bodies nested 1000 deep, then 10 plain ones: do their shadows still go out?"""

    async def start(self, run: CaseRun, args: argparse.Namespace) -> None:
        # Built as text: orjson, like most encoders, refuses to write this deep itself.
        nested = b"[" * DEPTH + b'"deep"' + b"]" * DEPTH
        async with aiohttp.ClientSession() as session:
            for i in range(NESTED):
                message = orjson.dumps([{"role": "user", "content": f"nested {i}"}])
                body = b'{"model": "bench", "messages": ' + message + b', "x": ' + nested + b"}"
                await send(session, run, f"nested-{i}", body)
            await asyncio.sleep(1.0)
            before = await candidate_stats(session, run)
            for i in range(10):
                await send(session, run, f"after-nested-{i}", chat(f"after-nested-{i}", False))
            await asyncio.sleep(1.0)
            after = await candidate_stats(session, run)
        run.notes.append(
            f"plain shadows after {NESTED} nested: {after['received'] - before['received']}/10 sent"
        )


class Regex(Abuse):
    """One request per case window whose schema pattern `^(a+)+$` the primary's answer
    backtracks on (scorer json_schema_valid)."""

    def __init__(self) -> None:
        self.sent: list[asyncio.Task[str]] = []

    async def window(self, run: CaseRun, args: argparse.Namespace, index: int) -> None:
        schema = {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "string", "pattern": "^(a+)+$"}},
        }
        async with aiohttp.ClientSession() as session:
            await send(
                session,
                run,
                f"regex-{index}",
                chat(f"regex-{index}", False, response_format=schema),
                content="regex",
            )

    async def finish(self, run: CaseRun, args: argparse.Namespace) -> None:
        run.notes.append("one catastrophic-pattern request per case window")


class BigPrompts(Abuse):
    """8 clients sending `size` MB prompts back to back during the case's windows."""

    def __init__(self, megabytes: int) -> None:
        self.size = megabytes * 1024 * 1024
        self.capped = False

    async def window(self, run: CaseRun, args: argparse.Namespace, index: int) -> None:
        deadline = time.monotonic() + args.window
        filler = "x" * self.size

        async def client(number: int) -> None:
            async with aiohttp.ClientSession() as session:
                sent = 0
                while time.monotonic() < deadline and not self.capped:
                    bench_id = f"big-{index}-{number}-{sent}"
                    body = orjson.dumps(
                        {"model": "bench", "messages": [{"role": "user", "content": filler}]}
                    )
                    await send(session, run, bench_id, body)
                    sent += 1

        async def watch() -> None:
            while time.monotonic() < deadline:
                if memory_kb(run.proc.pid)[0] / 1024 > args.rss_cap_mb:
                    self.capped = True
                await asyncio.sleep(0.1)

        await asyncio.gather(watch(), *(client(n) for n in range(8)))

    async def finish(self, run: CaseRun, args: argparse.Namespace) -> None:
        if self.capped:
            run.notes.append(f"prompts stopped at the {args.rss_cap_mb:.0f} MB RSS cap")


CASES = [
    Case("hang", "hang"),
    Case("error500", "error500", quick=False),
    Case("reset", "reset"),
    Case("garbage", "garbage", quick=False),
    Case("endless", "endless"),
    Case("unresolvable", UNRESOLVABLE),
    Case("closed-port", f"http://127.0.0.1:{free_port()}"),
    Case("connections", "ok", Connections(), nofile=1024),
    Case("corpus", "ok", Corpus()),
    Case("nested", "ok", Nested()),
    Case("regex", "ok", Regex()),
    Case("prompt-1MB-20%", "ok", BigPrompts(1), rate=0.2, quick=False),
    Case("prompt-1MB-100%", "ok", BigPrompts(1), quick=False),
    Case("prompt-2MB-20%", "ok", BigPrompts(2), rate=0.2, quick=False),
    Case("prompt-2MB-100%", "ok", BigPrompts(2)),
]
