"""A primary on loopback that answers with exact bytes: a raw asyncio server, so a test controls
the framing (lengths, chunks, closes, stalls) that an aiohttp fake would always get right.

    primary = HostilePrimary(replies(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi"))
    url = await primary.start()
    ...
    await primary.stop()

It reads each request whole (head, then its Content-Length body), keeps it in `seen`, and hands
it with the connection's writer to the test's `Answer`, which writes whatever it likes. The
connection goes on to the next request unless the answer closed it. `accepts` counts the
connections the proxy opened, `ended` lists those the proxy closed itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from tests.conftest import StartShadowtap, make_config

CLOSE = b""  # in `replies`: close the connection after this answer's bytes


@dataclass
class Seen:
    head: bytes
    body: bytes
    connection: int  # the number of the accepted connection that carried it (0, 1, ...)
    index: int  # the number of the request, over all connections (0, 1, ...)

    @property
    def request_line(self) -> bytes:
        return self.head.partition(b"\r\n")[0]


Answer = Callable[[Seen, asyncio.StreamWriter], Awaitable[None]]


def replies(*answers: bytes, close: bool = False) -> Answer:
    """The n-th request gets `answers[n]` (the last one from then on); `close`: then hang up."""

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(answers[min(len(served), len(answers) - 1)])
        served.append(seen)
        await writer.drain()
        if close:
            writer.close()

    served: list[Seen] = []
    return answer


def framed(body: bytes, *fields: bytes, status: bytes = b"200 OK") -> bytes:
    """One well-formed answer with a Content-Length, plus `fields` as they are given."""
    head = [b"HTTP/1.1 " + status, b"Content-Length: " + str(len(body)).encode(), *fields]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass
class HostilePrimary:
    answer: Answer
    seen: list[Seen] = field(default_factory=list)
    accepts: int = 0
    ended: list[int] = field(default_factory=list)  # connections the proxy closed
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self.writers:
                writer.transport.abort()  # unsent bytes (a flood) are dropped, not flushed
            for task in self._tasks:  # answers stalled on purpose
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.accepts
        self.accepts += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.writers.append(writer)
        try:
            while not writer.is_closing():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.ended.append(number)  # the proxy hung up between requests
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                seen = Seen(head, await reader.readexactly(length), number, len(self.seen))
                self.seen.append(seen)
                await self.answer(seen, writer)
        except ConnectionError:
            self.ended.append(number)
        except asyncio.CancelledError:
            pass  # stopped: ending quietly spares asyncio's stream callback a cancelled task
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def running(answer: Answer) -> AsyncIterator[HostilePrimary]:
    primary = HostilePrimary(answer)
    await primary.start()
    try:
        yield primary
    finally:
        await primary.stop()


@dataclass
class Got:
    """What a client saw through the proxy; `cut` when the answer broke off after its head."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    cut: bool


async def fetch(
    port: int,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    body: bytes = b'{"model": "m"}',
    **headers: str,
) -> Got:
    """One request to the proxy on a connection of its own, its answer read whole (or cut)."""
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(method, url, data=body or None, headers=headers) as response:
            parts: list[bytes] = []
            cut = False
            try:
                async for chunk in response.content.iter_any():
                    parts.append(chunk)
            except aiohttp.ClientPayloadError:
                cut = True
            reason = response.reason or ""
            return Got(response.status, reason, response.headers, b"".join(parts), cut)


async def proxy(start_shadowtap: StartShadowtap, url: str, **primary: object) -> int:
    """A proxy in front of `url` (nothing sampled), `primary` its [primary] settings; its port."""
    config = make_config(url, sampling={"rate": 0.0})
    config["primary"].update(primary)
    server = await start_shadowtap(config)
    return server.proxy_port
