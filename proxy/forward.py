"""`forward_primary`: stream the primary's answer to the client exactly as it arrives.

Bytes are relayed undecoded (the primary session does not decompress), chunk by chunk, so
status, headers (minus hop-by-hop), body bytes and SSE chunking reach the client as the primary
sent them. When the request is sampled, an `AnswerReader` (`capture`) is handed each chunk on
the side — kept as it came, parsed later off this path, never more than the answer cap — and
never touches what the client receives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from aiohttp import web
from shadowtap.answer import AnswerReader
from shadowtap.headers import downstream_response_headers, error_response, upstream_request_headers
from shadowtap.upstream import (
    AiohttpAnswer,
    Answer,
    UpstreamError,
    UpstreamPool,
    UpstreamUnreachable,
)

WHOLE_BODY_BYTES = 256 * 1024  # non-streamed answers up to this size are relayed in one write
UNBOUNDED_S = 365 * 24 * 3600.0  # `timeout_s` has no "never"; a year stands for it


def streamed(headers: Mapping[str, str]) -> bool:
    return headers.get("Content-Type", "").startswith("text/event-stream")


class AnswerCut(Exception):
    """The primary failed after the client's answer began: raised out of the handler, so
    aiohttp aborts the connection and the client sees a cut answer, not a shortened one."""


async def forward_primary(
    request: web.Request,
    body: bytes,
    session: aiohttp.ClientSession,
    url: str,
    upstream_timeout: aiohttp.ClientTimeout,
    capture: AnswerReader | None,
    pool: UpstreamPool | None = None,
    path_qs: str = "",
) -> tuple[web.StreamResponse, int | None]:
    """Relay one request; return the response sent and the upstream status (None: unreachable).

    Only a failure before the primary answered becomes the proxy's own 502 (or 504 on timeout);
    a failure mid-stream aborts the connection (`AnswerCut`). `pool` (the primary's own
    HTTP/1.1 client) sends what it `handles`; aiohttp's client the rest (HEAD, upgrades).
    """
    headers = upstream_request_headers(request.headers, request.remote)
    try:
        if pool is not None and pool.handles(request.method, request.headers):
            timeout_s = upstream_timeout.total or UNBOUNDED_S
            try:
                upstream = await pool.request(request.method, path_qs, headers, body, timeout_s)
            except ValueError:
                message = "a request header carries a line break"
                return error_response(400, message, "invalid_header", "invalid_request_error"), None
            try:
                return await _relay(request, upstream, capture)
            finally:
                upstream.release()  # kept alive only when read whole
        async with session.request(
            request.method,
            url,
            headers=headers,
            data=body or None,
            timeout=upstream_timeout,
            allow_redirects=False,
        ) as response:
            return await _relay(request, AiohttpAnswer(response), capture)
    except (TimeoutError, UpstreamError, aiohttp.ClientError) as error:
        return _failed(error, capture), None  # before the client's answer began
    except asyncio.CancelledError:
        if capture is not None:
            capture.fail("client disconnected")
        raise


async def _relay(
    request: web.Request, upstream: Answer, capture: AnswerReader | None
) -> tuple[web.StreamResponse, int]:
    """Send the client `upstream`'s answer as it arrives, a copy of each chunk to `capture`."""
    status = upstream.status
    if capture is not None:
        capture.begin(
            status,
            upstream.headers.get("Content-Type", ""),
            upstream.headers.get("Content-Encoding", ""),
        )
    headers = downstream_response_headers(upstream.headers)
    length = upstream.content_length
    if length is not None and length <= WHOLE_BODY_BYTES and not streamed(upstream.headers):
        data = await upstream.read()  # a small, finite answer: headers and body in one write
        if capture is not None:
            capture.feed(data)
        return web.Response(
            status=status, reason=upstream.reason, headers=headers, body=data
        ), status
    response = web.StreamResponse(status=status, reason=upstream.reason, headers=headers)
    await response.prepare(request)
    try:
        while chunk := await upstream.next_chunk():
            if capture is not None:
                capture.feed(chunk)
            try:
                await response.write(chunk)
            except ConnectionResetError:
                if capture is not None:  # the client went away: the upstream is closed after
                    capture.fail("client disconnected")
                return response, status
        await response.write_eof()
    except (TimeoutError, UpstreamError, aiohttp.ClientError) as error:
        if capture is not None:
            capture.fail(_why(error))
        raise AnswerCut(_why(error)) from error
    return response, status


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "primary timed out"
    return f"primary failed: {_name(error)}"


def _name(error: BaseException) -> str:
    """The failure's kind as a client may see it: the socket's error when unreachable."""
    return str(error) if isinstance(error, UpstreamUnreachable) else type(error).__name__


def _failed(error: BaseException, capture: AnswerReader | None) -> web.Response:
    """The proxy's own answer when the primary's never began: 504 on timeout, else 502."""
    if capture is not None:
        capture.fail(_why(error))
    if isinstance(error, TimeoutError):
        return error_response(
            504, "the primary did not answer in time", "upstream_timeout", "proxy_error"
        )
    message = f"the primary could not be reached ({_name(error)})"
    return error_response(502, message, "upstream_unreachable", "proxy_error")
