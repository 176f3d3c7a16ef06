"""`UpstreamPool`: kept-alive HTTP/1.1 connections to one origin, and the requests sent on them.

    pool = UpstreamPool.of("https://api.openai.com")
    answer = await pool.request("POST", "/v1/chat/completions", headers, body, timeout_s=600)
    try:
        while chunk := await answer.next_chunk():
            ...
    finally:
        answer.release()          # back to the pool when read whole, else closed
    await pool.close()

What it does as aiohttp's client did for the primary: a deadline over the whole exchange
(connect, head and body); a reused connection found closed before any answer byte retried once
on a new one for idempotent methods only (a POST may have reached the model: never sent twice);
idle connections closed after `keepalive_s`; TLS verified against the system's CAs. What it
leaves to aiohttp (`handles`): HEAD (llhttp cannot be told that an answer has no body) and
protocol upgrades.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shadowtap.upstream.connection import (
    Body,
    UpstreamClosed,
    UpstreamConnection,
    UpstreamError,
)
from yarl import URL

IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "OPTIONS", "TRACE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # sent `Content-Length: 0` when empty
DNS_TTL_S = 300.0
KEEPALIVE_S = 15.0  # aiohttp's connector closes idle connections after as long


class UpstreamUnreachable(UpstreamError):
    """No connection could be made (refused, unresolvable, TLS failed)."""


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    tls: bool
    host_header: bytes  # `Host:` as aiohttp's client sends it (the port only when not default)
    base_path: str  # the URL's path, which every request's target is appended to

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        shown = f"[{host}]" if ":" in host else _ascii_host(host)
        if port != (443 if tls else 80):
            shown = f"{shown}:{port}"
        # Percent-encoded as aiohttp's client sent it (yarl's quoting): a space or a non-ASCII
        # byte sent raw would break the request line. The path alone, behind a stand-in host:
        # yarl encodes the real one with IDNA, which may refuse it (see `_ascii_host`).
        path = URL("http://h" + parts.path).raw_path.rstrip("/")
        return cls(host, port, tls, shown.encode("ascii"), path)


def _ascii_host(host: str) -> str:
    """The host as `Host:` carries it: IDNA for a non-ASCII name. A name IDNA refuses (a label
    over 63 characters) is kept as written: the resolver refuses it at the first request, so
    one bad target URL fails its calls, not the proxy's start."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host.encode("ascii", "backslashreplace").decode("ascii")


def announced_keepalive_s(value: str) -> float:
    """How long to keep a connection whose answer said `Keep-Alive: timeout=N`: a second less
    than N, so a request is not sent just as the upstream closes it (a POST is never retried).
    Infinite when no usable timeout is given."""
    for part in value.split(","):
        name, _, number = part.partition("=")
        if name.strip().lower() == "timeout":
            try:
                seconds = float(number.strip())
            except ValueError:
                return math.inf
            return seconds - 1.0 if math.isfinite(seconds) else math.inf
    return math.inf


class UpstreamAnswer:
    """One answer: its head as attributes, its body from `next_chunk()`, then `release()`."""

    __slots__ = ("_connection", "_pool", "_timer", "content_length", "headers", "reason", "status")

    def __init__(
        self, pool: UpstreamPool, connection: UpstreamConnection, timer: asyncio.TimerHandle
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._timer = timer
        self.status = connection.status
        self.reason = connection.reason
        self.headers = connection.headers
        length = self.headers.get("content-length")
        self.content_length = int(length) if length is not None else None  # llhttp checked it

    async def next_chunk(self) -> bytes:
        """What arrived since the last call (waiting for some); b"" once the body is whole."""
        return await self._connection.next_chunk()

    async def read(self) -> bytes:
        parts = []
        while chunk := await self._connection.next_chunk():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Done with this answer: its connection is kept if it was read whole, else closed."""
        self._timer.cancel()
        self._pool.release(self._connection)


class UpstreamPool:
    __slots__ = (
        "_addresses",
        "_addresses_until",
        "_closed",
        "_idle",
        "_loop",
        "_ssl",
        "_sweep",
        "keepalive_s",
        "lookups",
        "origin",
    )

    def __init__(self, origin: Origin, keepalive_s: float = KEEPALIVE_S) -> None:
        self.origin = origin
        self.keepalive_s = keepalive_s
        self._ssl = ssl.create_default_context() if origin.tls else None
        self._idle: deque[UpstreamConnection] = deque()
        self._loop = asyncio.get_running_loop()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self._addresses: list[tuple[str, int]] = []  # the host's, resolved at most every DNS_TTL_S
        self._addresses_until = 0.0
        self.lookups = 0  # how often the host name was resolved

    @classmethod
    def of(cls, url: str) -> UpstreamPool:
        return cls(Origin.of(url))

    @staticmethod
    def handles(method: str, headers: Mapping[str, str]) -> bool:
        """Whether this client can relay the request (else aiohttp's client does)."""
        return method != "HEAD" and "upgrade" not in headers

    async def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Body,
        timeout_s: float,
    ) -> UpstreamAnswer:
        """Send one request; return once its answer's head arrived.

        Raises TimeoutError past `timeout_s`, UpstreamError when the upstream cannot be
        reached or breaks the exchange, ValueError when a header would split the request."""
        head = self._head(method, target, headers, body)
        loop = self._loop
        deadline = loop.time() + timeout_s
        connection = self._idle_connection()
        while True:
            reused = connection is not None
            if connection is None:
                connection = await self._connect(deadline)
            timer = loop.call_at(deadline, connection.time_out)
            try:
                connection.send(head, body)
                await connection.head()
            except UpstreamClosed:
                timer.cancel()
                connection.close()
                if reused and not connection.received and method in IDEMPOTENT:
                    connection = None  # the upstream closed it while idle: try a new one
                    continue
                raise
            except BaseException:
                timer.cancel()
                connection.close()
                raise
            return UpstreamAnswer(self, connection, timer)

    def release(self, connection: UpstreamConnection) -> None:
        transport = connection.transport
        if (
            self._closed
            or connection.lost
            or not connection.complete
            or transport is None
            or transport.is_closing()
        ):
            connection.close()
            return
        keep_s = self.keepalive_s
        announced = connection.headers.get("Keep-Alive")  # read before reuse() forgets it
        if announced is not None:
            keep_s = min(keep_s, announced_keepalive_s(announced))
        if keep_s <= 0:
            connection.close()
            return
        connection.reuse()
        connection.idle_until = self._loop.time() + keep_s
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = self._loop.call_later(self.keepalive_s, self._close_expired)

    async def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._idle:
            self._idle.pop().close()

    def _head(self, method: str, target: str, headers: Mapping[str, str], body: Body) -> bytes:
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        # One check for every field: a CR or LF inside a name or value would end it early and
        # let its rest be read as more fields, or as a second request.
        if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
            raise ValueError("a header carries a line break")
        length = len(body) if isinstance(body, bytes) else sum(len(part) for part in body)
        if length or method in BODY_METHODS:
            fields += f"Content-Length: {length}\r\n"
        start = f"{method} {self.origin.base_path}{target} HTTP/1.1\r\nHost: "
        return b"".join(
            (
                start.encode("utf-8", "surrogateescape"),
                self.origin.host_header,
                b"\r\n",
                fields.encode("utf-8", "surrogateescape"),
                b"\r\n",
            )
        )

    def _idle_connection(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()  # the most recent: the least likely to have been closed
            transport = connection.transport
            if (
                not connection.lost
                and transport is not None
                and not transport.is_closing()
                and connection.idle_until > self._loop.time()
            ):
                return connection
            connection.close()
        return None

    async def _connect(self, deadline: float) -> UpstreamConnection:
        origin = self.origin
        remaining = deadline - self._loop.time()
        if remaining <= 0:
            raise TimeoutError("the upstream did not answer in time")
        try:
            async with asyncio.timeout(remaining):
                addresses = await self._resolve()
                for index, (address, port) in enumerate(addresses):
                    try:
                        _, protocol = await self._loop.create_connection(
                            UpstreamConnection,
                            address,
                            port,
                            ssl=self._ssl,
                            server_hostname=origin.host if self._ssl is not None else None,
                        )
                        return protocol
                    except OSError:
                        if index == len(addresses) - 1:
                            self._addresses_until = 0.0  # resolved again on the next attempt
                            raise
        # Refused, unresolvable, TLS refused (ssl.SSLError is an OSError); UnicodeError: a
        # host name the resolver's IDNA encoding refuses (a label over 63 characters).
        except (OSError, UnicodeError) as error:
            raise UpstreamUnreachable(type(error).__name__) from error
        raise UpstreamUnreachable("no address")  # getaddrinfo never answers an empty list

    async def _resolve(self) -> list[tuple[str, int]]:
        """The host's addresses, looked up at most every `DNS_TTL_S` (aiohttp's session kept
        them 300 s): a burst of new connections makes no burst of DNS queries, each of which
        a cluster's resolver may multiply by its search domains."""
        now = self._loop.time()
        if now < self._addresses_until:
            return self._addresses
        self.lookups += 1
        found = await self._loop.getaddrinfo(
            self.origin.host, self.origin.port, type=socket.SOCK_STREAM
        )
        self._addresses = list(dict.fromkeys((str(f[4][0]), int(f[4][1])) for f in found))
        self._addresses_until = now + DNS_TTL_S
        return self._addresses

    def _close_expired(self) -> None:
        self._sweep = None
        now = self._loop.time()
        idle: deque[UpstreamConnection] = deque()
        # In the order they went idle, which announced timeouts make another than they expire in.
        for connection in self._idle:
            if connection.idle_until > now:
                idle.append(connection)
            else:
                connection.close()
        self._idle = idle
        if idle:
            self._sweep = self._loop.call_later(self.keepalive_s, self._close_expired)
