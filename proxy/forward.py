"""`forward_primary`: stream the primary's answer to the client exactly as it arrives.

Bytes are relayed undecoded (the primary session does not decompress), chunk by chunk, so
status, headers (minus hop-by-hop), body bytes and SSE chunking reach the client as the primary
sent them. When the request is sampled, a `Capture` watches the same chunks on the side to build
the primary's `Completion`; it never holds more than `CAPTURE_MAX_BYTES` and never touches what
the client receives.
"""

from __future__ import annotations

import asyncio
import time
import zlib

import aiohttp
from aiohttp import web
from shadowtap.completion import Completion
from shadowtap.headers import downstream_response_headers, error_response, upstream_request_headers
from shadowtap.normalize import StreamAssembler, completion_from_json

CAPTURE_MAX_BYTES = 16 * 1024 * 1024
WHOLE_BODY_BYTES = 256 * 1024  # non-streamed answers up to this size are relayed in one write


def streamed(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.headers.get("Content-Type", "").startswith("text/event-stream")


class Capture:
    """A side copy of a sampled primary answer, turned into a `Completion` at the end."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.finished: float | None = None
        self.status: int | None = None
        self.ttft_s: float | None = None
        self.error: str | None = None
        self._assembler: StreamAssembler | None = None
        self._buffer = bytearray()
        self._seen = 0
        self._decoder: zlib._Decompress | None = None

    def begin(self, status: int, content_type: str, encoding: str) -> None:
        self.status = status
        if content_type.startswith("text/event-stream"):
            self._assembler = StreamAssembler()
        if encoding in ("gzip", "deflate"):
            self._decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header
        elif encoding not in ("", "identity"):
            self.error = f"cannot read a {encoding}-encoded answer"

    def feed(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk)
            except zlib.error:
                self.error = "answer could not be decompressed"
                return
        self._seen += len(chunk)
        if self._seen > CAPTURE_MAX_BYTES:
            self.error = f"answer larger than {CAPTURE_MAX_BYTES} bytes was not captured"
            return
        if self._assembler is not None:
            if self._assembler.feed(chunk) and self.ttft_s is None:
                self.ttft_s = time.perf_counter() - self.started
        else:
            self._buffer += chunk

    def fail(self, error: str) -> None:
        self.error = self.error or error

    def finish(self) -> None:
        """The answer is over (or abandoned): latency ends here, not when it is normalized."""
        self.finished = time.perf_counter()

    def completion(self) -> Completion:
        """Normalize the side copy; called off the primary path, after `finish`."""
        latency = (self.finished or time.perf_counter()) - self.started
        if self.status is None:
            return Completion(error=self.error or "no answer", latency_s=latency)
        if self._assembler is not None:
            completion = self._assembler.finish(self.status)
        else:
            completion = completion_from_json(bytes(self._buffer), self.status)
        completion.latency_s = latency
        completion.ttft_s = self.ttft_s
        if self.error is not None:
            completion.error = self.error
        return completion


async def forward_primary(
    request: web.Request,
    body: bytes,
    session: aiohttp.ClientSession,
    url: str,
    upstream_timeout: aiohttp.ClientTimeout,
    capture: Capture | None,
) -> tuple[web.StreamResponse, int | None]:
    """Relay one request; return the response sent and the upstream status (None: unreachable).

    Only a failure before the primary answered becomes the proxy's own 502 (or 504 on timeout);
    a failure mid-stream aborts the connection, so the client sees a cut answer, not a
    silently shortened one.
    """
    headers = upstream_request_headers(request.headers, request.remote)
    prepared = False
    try:
        async with session.request(
            request.method,
            url,
            headers=headers,
            data=body or None,
            timeout=upstream_timeout,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=downstream_response_headers(upstream.headers),
            )
            if capture is not None:
                capture.begin(
                    upstream.status,
                    upstream.headers.get("Content-Type", ""),
                    upstream.headers.get("Content-Encoding", "").lower(),
                )
            length = upstream.content_length
            if length is not None and length <= WHOLE_BODY_BYTES and not streamed(upstream):
                # A small, finite answer: send headers and body in one write, not three.
                data = await upstream.read()
                if capture is not None:
                    capture.feed(data)
                whole = web.Response(
                    status=upstream.status,
                    reason=upstream.reason,
                    headers=response.headers,
                    body=data,
                )
                return whole, upstream.status
            await response.prepare(request)
            prepared = True
            async for chunk in upstream.content.iter_any():
                if capture is not None:
                    capture.feed(chunk)
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    # The client went away: leaving `async with` closes the upstream request.
                    if capture is not None:
                        capture.fail("client disconnected")
                    return response, upstream.status
            await response.write_eof()
            return response, upstream.status
    except (TimeoutError, aiohttp.ClientError) as error:
        timed_out = isinstance(error, TimeoutError)
        reason = "primary timed out" if timed_out else f"primary failed: {type(error).__name__}"
        if capture is not None:
            capture.fail(reason)
        if prepared:
            raise  # aiohttp aborts the connection: the client must see a cut answer
        if timed_out:
            return error_response(
                504, "the primary did not answer in time", "upstream_timeout", "proxy_error"
            ), None
        message = f"the primary could not be reached ({type(error).__name__})"
        return error_response(502, message, "upstream_unreachable", "proxy_error"), None
    except asyncio.CancelledError:
        if capture is not None:
            capture.fail("client disconnected")
        raise
