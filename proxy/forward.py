"""`forward_primary`: stream the primary's answer to the client exactly as it arrives.

Bytes are relayed undecoded (the primary session does not decompress), chunk by chunk, so
status, headers (minus hop-by-hop), body bytes and SSE chunking reach the client as the primary
sent them. When the request is sampled, an `AnswerReader` (`capture`) is handed each chunk on
the side — kept as it came, parsed later off this path, never more than the answer cap — and
never touches what the client receives.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from shadowtap.answer import AnswerReader
from shadowtap.headers import downstream_response_headers, error_response, upstream_request_headers

WHOLE_BODY_BYTES = 256 * 1024  # non-streamed answers up to this size are relayed in one write


def streamed(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.headers.get("Content-Type", "").startswith("text/event-stream")


async def forward_primary(
    request: web.Request,
    body: bytes,
    session: aiohttp.ClientSession,
    url: str,
    upstream_timeout: aiohttp.ClientTimeout,
    capture: AnswerReader | None,
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
            headers = downstream_response_headers(upstream.headers)
            if capture is not None:
                capture.begin(
                    upstream.status,
                    upstream.headers.get("Content-Type", ""),
                    upstream.headers.get("Content-Encoding", ""),
                )
            length = upstream.content_length
            if length is not None and length <= WHOLE_BODY_BYTES and not streamed(upstream):
                # A small, finite answer: send headers and body in one write, not three.
                data = await upstream.read()
                if capture is not None:
                    capture.feed(data)
                whole = web.Response(
                    status=upstream.status, reason=upstream.reason, headers=headers, body=data
                )
                return whole, upstream.status
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=headers
            )
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
