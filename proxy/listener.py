"""`Listener`: one listening socket in front of an aiohttp server, with limits on its clients.

aiohttp closes idle keep-alive connections, but has no deadline for a request's head or body
and no cap on connections: 500 slowloris clients (a header line sent a byte at a time) and
thousands of idle half-sent connections were held open for ever, and with a 1,024-file limit
idle connections to the admin port took the proxy port down too. Each listener therefore:

- closes a new connection whose first request head has not arrived `header_timeout_s` after
  it opened (a later head on a kept-alive connection is bounded by aiohttp's keep-alive
  timeout, `idle_timeout_s` after the previous answer);
- answers 408 and closes the connection when a request's body has not fully arrived
  `body_timeout_s` after its head;
- holds at most `max_connections` connections: beyond that a new one is closed at once,
  counted in `shadowtap_connections_rejected_total{listener}` and logged (at most every 10 s),
  so one listener's clients can never take the other's file descriptors;
- at shutdown, gives uploads in progress until a cutoff and answers 503 to those still
  uploading then (`finish_uploads`), before aiohttp's own drain closes their connections.

Every accepted socket gets a thin protocol (`_Connection`) that counts it, arms its head timer
and hands each event on to aiohttp's `RequestHandler`; aiohttp's request factory, wrapped,
says when a head has arrived.

    limits = ClientLimits.of(config.server, config.server.max_connections)
    listener = Listener("proxy", runner, limits, metrics)
    port = await listener.start("127.0.0.1", 8080)   # after runner.setup()
    listener.close()                                  # no new connections
    await listener.finish_uploads(cutoff)             # then runner.cleanup()
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from shadowtap.config import ServerConfig
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics

log = get_logger("shadowtap.listener")

ListenerName = Literal["proxy", "admin"]
# A burst beyond the listen backlog is not refused but left to TCP retries: clients wait
# seconds to be accepted, and one whose last handshake ACK was dropped believes it is connected
# while the server never learns of it (82 of 1,000 idle clients in bench/abuse.py at 128,
# aiohttp's default). nginx uses 511; the kernel caps the figure at net.core.somaxconn.
BACKLOG = 1024
CAP_LOG_INTERVAL_S = 10.0
# Files the process needs besides client connections: DuckDB and its WAL, Parquet segments,
# logs, the scoring pool's pipes, the event loop's own.
FD_RESERVE = 256


@dataclass(frozen=True, slots=True)
class ClientLimits:
    header_timeout_s: float
    body_timeout_s: float
    idle_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, server: ServerConfig, max_connections: int) -> ClientLimits:
        return cls(
            server.header_timeout_s, server.body_timeout_s, server.idle_timeout_s, max_connections
        )


def _json_error(message: str, kind: str, code: str) -> str:
    """The proxy's own errors in OpenAI's shape, as shadowtap.headers.error_response writes."""
    return orjson.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).decode()


class BodyTimeout(web.HTTPRequestTimeout, TimeoutError):
    """Set on a late body's stream, so the handler reading it raises this: aiohttp answers an
    HTTPException as its response. Also a TimeoutError, which makes aiohttp's read of the
    rest of the body after the answer give up quietly and close the connection."""

    def __init__(self, timeout_s: float) -> None:
        message = f"the request body did not arrive within {timeout_s:g} s"
        super().__init__(
            text=_json_error(message, "invalid_request_error", "request_timeout"),
            content_type="application/json",
        )
        self.force_close()


class UploadCutOff(web.HTTPServiceUnavailable, TimeoutError):
    """An upload still in progress when the shutdown cutoff came (see `BodyTimeout`)."""

    def __init__(self) -> None:
        message = "shadowtap is shutting down and the request body was not complete; retry"
        super().__init__(
            text=_json_error(message, "proxy_error", "shutting_down"),
            content_type="application/json",
            headers={"Retry-After": "1"},
        )
        self.force_close()


class _Connection(asyncio.Protocol):
    """One accepted socket: admitted or refused, then aiohttp's protocol behind a head timer."""

    __slots__ = ("_handler", "_head_timer", "_listener", "_transport", "upload")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._handler: web.RequestHandler | None = None  # None: refused (or not yet made)
        self._transport: asyncio.Transport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self.upload: StreamReader | None = None  # the body of its latest request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance).
        transport = cast(asyncio.Transport, transport)
        handler = self._listener._admit(self)
        if handler is None:
            transport.close()
            return
        self._handler, self._transport = handler, transport
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(
            self._listener.limits.header_timeout_s, self._head_timed_out
        )
        handler.connection_made(transport)

    def head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._listener._client_timed_out("header")
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> None:
        # aiohttp's returns None: the transport closes once the client has half-closed.
        if self._handler is not None:
            self._handler.eof_received()

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        handler = self._handler
        if handler is None:
            return
        self.head_arrived()  # cancels the timer
        if self.upload is not None:  # a body cut off by the client will never end by itself
            self._listener._upload_ended(self.upload)
        self._listener._forget(handler)
        handler.connection_lost(exc)


class Listener:
    def __init__(
        self, name: ListenerName, runner: web.AppRunner, limits: ClientLimits, metrics: Metrics
    ) -> None:
        self.name = name
        self.limits = limits
        self._runner = runner
        self._metrics = metrics
        self._server: web.Server | None = None
        self._socket: asyncio.Server | None = None
        self._open: dict[web.RequestHandler, _Connection] = {}
        self._uploads: dict[StreamReader, asyncio.TimerHandle] = {}
        self._uploads_done = asyncio.Event()
        self._cutoff: float | None = None  # loop time after which no upload may go on
        self._refused_since_log = 0
        self._next_cap_log = 0.0
        metrics.track_connections(name, lambda: len(self._open))

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(
        self,
        host: str,
        port: int,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
    ) -> int:
        """Listen (the runner must be set up); return the bound port. `handler`: every request
        goes to it directly instead of through the app's router and middlewares."""
        server = self._runner.server
        if server is None:
            raise RuntimeError("Listener.start() before runner.setup()")
        self._server = server
        if handler is not None:
            # Each new RequestHandler reads it, like `request_factory` below. The app's request
            # factory still makes a `web.Request` (with no match info: it never was routed).
            server.request_handler = cast(Callable[[web.BaseRequest], Any], handler)
        make_request = server.request_factory

        def request_factory(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: web.RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> web.BaseRequest:
            self._head_arrived(protocol, payload)
            return make_request(message, payload, protocol, writer, task)

        # A public attribute each new RequestHandler reads: the one place aiohttp says that a
        # request head has been parsed, with the body's stream.
        server.request_factory = request_factory
        loop = asyncio.get_running_loop()
        self._socket = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=BACKLOG
        )
        return int(self._socket.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting; open connections go on (aiohttp's runner drains them)."""
        if self._socket is not None:
            self._socket.close()

    async def finish_uploads(self, cutoff: float) -> None:
        """Let request bodies in progress arrive until `cutoff` (loop time); bodies still
        incomplete then are answered 503. Returns once no upload is in progress."""
        loop = asyncio.get_running_loop()
        self._cutoff = cutoff
        for payload, timer in list(self._uploads.items()):
            if timer.when() > cutoff:
                timer.cancel()
                self._uploads[payload] = loop.call_at(cutoff, self._body_late, payload)
        if self._uploads:
            log.info("waiting_for_uploads", listener=self.name, count=len(self._uploads))
            self._uploads_done.clear()
            # The slack lets the 503s set at the cutoff reach their handlers.
            timeout = max(0.0, cutoff - loop.time()) + 1.0
            try:
                await asyncio.wait_for(self._uploads_done.wait(), timeout)
            except TimeoutError:
                log.warning("uploads_still_open", listener=self.name, count=len(self._uploads))

    # -- events from the connections ---------------------------------------------------------
    def _admit(self, connection: _Connection) -> web.RequestHandler | None:
        if len(self._open) >= self.limits.max_connections or self._server is None:
            self._refuse()
            return None
        handler = self._server()
        self._open[handler] = connection
        return handler

    def _forget(self, handler: web.RequestHandler) -> None:
        self._open.pop(handler, None)

    def _refuse(self) -> None:
        self._metrics.connection_rejected(self.name)
        self._refused_since_log += 1
        now = asyncio.get_running_loop().time()
        if now >= self._next_cap_log:
            key = "max_connections" if self.name == "proxy" else "admin_max_connections"
            log.warning(
                "connection_limit_reached",
                listener=self.name,
                limit=self.limits.max_connections,
                refused=self._refused_since_log,
                setting=f"server.{key}",
            )
            self._refused_since_log = 0
            self._next_cap_log = now + CAP_LOG_INTERVAL_S

    def _client_timed_out(self, phase: Literal["header", "body"]) -> None:
        self._metrics.client_timed_out(self.name, phase)

    def _head_arrived(self, protocol: web.RequestHandler, payload: StreamReader) -> None:
        connection = self._open.get(protocol)
        if connection is not None:
            connection.head_arrived()
        if payload.is_eof():
            return  # no body, or all of it already here
        if connection is not None:
            # aiohttp ends a stream whose connection is lost with an exception, which drops
            # its end-of-body callbacks: the connection ends the upload itself then.
            connection.upload = payload
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        if self._cutoff is not None:
            deadline = min(deadline, self._cutoff)
        self._uploads[payload] = loop.call_at(deadline, self._body_late, payload)
        payload.on_eof(lambda: self._upload_ended(payload))

    def _upload_ended(self, payload: StreamReader) -> None:
        timer = self._uploads.pop(payload, None)
        if timer is not None:
            timer.cancel()
        if not self._uploads:
            self._uploads_done.set()

    def _body_late(self, payload: StreamReader) -> None:
        self._upload_ended(payload)
        if payload.is_eof() or payload.exception() is not None:
            return  # complete, or the request is over (aiohttp marks its stream then)
        if self._cutoff is not None:
            payload.set_exception(UploadCutOff())
            return
        self._client_timed_out("body")
        payload.set_exception(BodyTimeout(self.limits.body_timeout_s))


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the default soft limit is often 1,024);
    return the soft limit in force."""
    if sys.platform == "win32":
        return 0
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("open_file_limit_not_raised", soft=soft, hard=hard, error=str(error))
    return soft


def open_file_limit() -> int | None:
    if sys.platform == "win32":
        return None
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def fit_proxy_cap(proxy_cap: int, admin_cap: int, shadows: int, open_files: int | None) -> int:
    """The proxy listener's cap, lowered if need be so both listeners fit the open-file limit.

    A proxied connection holds two descriptors (the client's and one to the primary); shadows
    hold their own; the admin listener keeps its whole cap, so a flood of proxy clients can
    never starve probes and scrapes of descriptors.
    """
    if open_files is None:
        return proxy_cap
    room = open_files - FD_RESERVE - admin_cap - shadows
    return max(1, min(proxy_cap, room // 2))
