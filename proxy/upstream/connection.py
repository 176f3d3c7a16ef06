"""`UpstreamConnection`: one HTTP/1.1 connection to an upstream, parsed by llhttp (httptools).

aiohttp's client builds a request object, a response object, a timer context, a stream
reader and their futures for every call: about 350k CPU instructions a request, more than
half of what a bare aiohttp pass-through costs in all. This protocol keeps only what a relay
needs: the head of one answer (status, reason, headers), then its body as a list of chunks
handed to one reader, with the transport paused while that reader is `PAUSE_BYTES` behind.

One request at a time: the pool (`shadowtap.upstream.pool`) hands a connection out, and takes
it back only once an answer was read whole and both sides agreed to keep it alive.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools
from multidict import CIMultiDict

# Reading pauses once this much of an answer waits for the reader (a client slower than the
# upstream), so a fast upstream can never fill the proxy's memory: 64 KiB, aiohttp's own read
# buffer, since 2,000 slow clients at 256 KiB each would hold half a gigabyte.
PAUSE_BYTES = 64 * 1024
# An answer's status line and headers together; aiohttp's client refuses a field over 8 KiB
# and the headers of any API answer fit in a few: beyond this the upstream is broken.
MAX_HEAD_BYTES = 64 * 1024


# A request body: its bytes, or pieces of it sent one after another (`shadow_request.Spliced`).
Body = bytes | tuple[bytes | memoryview, ...]


class UpstreamError(Exception):
    """The upstream broke the exchange: unreachable, closed early, or not speaking HTTP/1.1."""


class UpstreamClosed(UpstreamError):
    """The connection closed (or reset) before the answer was whole."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes are not a valid HTTP/1.1 answer."""


class UpstreamConnection(asyncio.Protocol):
    """The protocol of one connection, and the state of the one answer it is reading."""

    __slots__ = (
        "_body_bytes",
        "_chunks",
        "_close_delimited",
        "_error",
        "_fed_without_body",
        "_head_bytes",
        "_head_waiter",
        "_paused",
        "_reader_waiter",
        "busy",
        "complete",
        "headers",
        "idle_until",
        "lost",
        "parser",
        "reason",
        "received",
        "status",
        "transport",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost = False  # the connection is gone (or going): never reused
        self.idle_until = 0.0  # when an idle connection is no longer reused
        self.busy = False  # a request was sent and its answer is not yet read whole
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.complete = False  # the whole answer arrived
        self.received = (
            False  # any byte of an answer arrived (a reused connection never retries then)
        )
        self._head_bytes = 0
        self._fed_without_body = 0  # bytes fed since the last body byte (or ever)
        self._body_bytes = 0
        self._close_delimited = False
        self._chunks: deque[bytes] = deque()
        self._paused = False
        self._error: BaseException | None = None
        self._head_waiter: asyncio.Future[None] | None = None
        self._reader_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for: this connection cannot be trusted again
            self.close()
            return
        self.received = True
        body_bytes = self._body_bytes
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self.complete:  # bytes after the whole answer: it stands, the connection goes
                self.close()
            else:
                self._abort(self._error or UpstreamProtocolError("invalid HTTP/1.1 answer"))
        except httptools.HttpParserError as error:
            self._abort(UpstreamProtocolError(f"invalid HTTP/1.1 answer: {error}"))
        except httptools.HttpParserUpgrade:  # not an HttpParserError: upgrades go via aiohttp
            self._abort(UpstreamProtocolError("an upgrade (101) no request asked for"))
        if self._error is None and not self.complete:
            # httptools joins a field's pieces until the field ends, unseen by `on_header`: a
            # head or a chunked body's trailers fed for ever would be buffered whole until the
            # deadline. What is fed without a body byte (head, chunk framing, trailers) counts.
            if self._body_bytes != body_bytes:
                self._fed_without_body = 0
            else:
                self._fed_without_body += len(data)
                if self._fed_without_body > MAX_HEAD_BYTES:
                    self._abort(self._no_body_in_sight())

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def pause_writing(self) -> None:  # request bodies are written whole; the transport buffers
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:
            raise ValueError  # a second answer to one request: stops the parser
        self.headers = CIMultiDict()
        self.reason = ""
        self._head_bytes = 0

    def on_status(self, reason: bytes) -> None:
        self._head_bytes += len(reason)
        self.reason += reason.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.status:  # a trailer field, after a chunked body: never merged into the head
            return
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            self._error = self._head_too_big()
            raise ValueError  # stops the parser: reported as HttpParserCallbackError
        self.headers.add(name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (`100 Continue`): the real one follows
            return
        self.status = status
        headers = self.headers
        self._close_delimited = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._body_bytes += len(body)
        if self._body_bytes > PAUSE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def on_message_complete(self) -> None:
        if self.status == 0:
            return  # the end of an interim answer
        self.complete = True
        if not self.parser.should_keep_alive():
            self.lost = True
        self._wake_reader()

    # -- the request's side -----------------------------------------------------------------
    def send(self, head: bytes, body: Body) -> None:
        """Write one request; its answer is then awaited with `head()` and `next_chunk()`."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise UpstreamClosed("the connection closed before the request was sent")
        self.busy = True
        if isinstance(body, tuple):  # pieces of a body never joined (a long prompt's views)
            transport.writelines((head, *body))
        elif body and len(body) < 16 * 1024:
            transport.write(head + body)  # one segment, not two
        else:
            transport.write(head)
            if body:
                transport.write(body)

    async def head(self) -> None:
        """Wait until the answer's status and headers arrived (or raise why they cannot)."""
        if self.status == 0 and self._error is None:
            self._head_waiter = asyncio.get_running_loop().create_future()
            await self._head_waiter
        if self._error is not None and self.status == 0:
            raise self._error

    async def next_chunk(self) -> bytes:
        """The body received since the last call, joined; b"" once the answer is whole."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            self._reader_waiter = asyncio.get_running_loop().create_future()
            await self._reader_waiter
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        if len(chunks) > 0:
            chunks.clear()
        self._body_bytes = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def time_out(self) -> None:
        """The request's deadline passed: its reader raises TimeoutError, the socket closes."""
        self._abort(TimeoutError("the upstream did not answer in time"))

    def reuse(self) -> None:
        """Ready for the pool's next request (only after a whole answer, kept alive)."""
        self.busy = False
        self._reset()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _head_too_big() -> UpstreamProtocolError:
        return UpstreamProtocolError(f"the answer's head is over {MAX_HEAD_BYTES} bytes")

    def _no_body_in_sight(self) -> UpstreamProtocolError:
        if self.status == 0:
            return self._head_too_big()
        return UpstreamProtocolError(f"over {MAX_HEAD_BYTES} bytes of chunk framing or trailers")

    def _abort(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.lost = True
        if self.transport is not None:
            self.transport.abort()
        self._wake_all()

    def _ended(self, exc: Exception | None) -> None:
        """The upstream closed: the end of a close-delimited body, else an answer cut short."""
        self.lost = True
        if self.status and self._close_delimited and not self.complete and exc is None:
            self.complete = True
        elif not self.complete and self._error is None:
            why = f": {type(exc).__name__}" if exc is not None else ""
            self._error = UpstreamClosed(f"the upstream closed the connection{why}")
        self._wake_all()

    def _wake_reader(self) -> None:
        waiter = self._reader_waiter
        if waiter is not None:
            self._reader_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_all(self) -> None:
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._wake_reader()
