"""One shadow request sent and its answer read: `call_shadow`, for live shadows
(`shadow.Shadowing.run_shadow`) and replay alike.

A shadow never raises: whatever the target does — hang, 500, reset, garbage — becomes a
`Completion` with `error` set and an outcome label (ok, error, timeout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp
from multidict import CIMultiDictProxy
from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import UNPACED
from shadowtap.completion import Completion
from shadowtap.config import SamplingConfig
from shadowtap.dialects.tables import OPENAI_CHAT
from shadowtap.shadow_request import ShadowTarget, Spliced, shadow_headers
from shadowtap.upstream import AiohttpAnswer, UpstreamError, UpstreamPool

DEFAULT_ANSWER_BYTES = SamplingConfig().max_answer_bytes
# A transport error longer than this is not kept (twice aiohttp's 8190-byte line limit: a
# URL it quotes fits). Only aiohttp's client parser writes longer ones: it quotes the answer's
# line it failed on, up to what one read gave it (a candidate's 200 KB line: 128-500 KB).
MAX_ERROR_CHARS = 16384


async def call_shadow(
    session: aiohttp.ClientSession,
    target: ShadowTarget,
    method: str,
    path_qs: str,
    body: bytes | Spliced,
    client_headers: CIMultiDictProxy[str],
    reader: AnswerReader | None = None,
    route_dialect: str | None = OPENAI_CHAT,
    pool: UpstreamPool | None = None,
    on_head: Callable[[Mapping[str, str]], None] | None = None,
) -> tuple[Completion, str]:
    """Send one shadow request; return its `Completion` and outcome (ok, error, timeout).

    Through `pool`, the target's own HTTP/1.1 client (`shadowtap.upstream`), when given (live
    shadows and replay; judges go through `session`). `on_head` is shown the answer's headers.

    The answer is read by `reader`, within its cap and its target's pace (the proxy's; by
    default the answer cap alone, for callers off the primary's path such as replay);
    `timeout_s` bounds the whole call, waits for the pace included.
    """
    if reader is None:
        reader = AnswerReader(
            target.name,
            UNPACED,
            AnswerLimits(DEFAULT_ANSWER_BYTES),
            dialect=target.speaks(route_dialect),
        )
    headers = shadow_headers(client_headers, target, route_dialect)
    headers["Accept-Encoding"] = "gzip, deflate"  # what the reader decodes, a slice at a time
    # A body the client sent without a type is JSON (the sampler parsed it), which is what every
    # target's API expects; aiohttp's client would have labelled it application/octet-stream.
    if body and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    native = pool if pool is not None and pool.handles(method, headers) else None
    data: bytes | AsyncIterator[bytes | memoryview] = body if isinstance(body, bytes) else b""
    if native is None and isinstance(body, Spliced):  # the client's bytes, never joined
        data = body.stream()  # (the pool writes a Spliced body's pieces itself)
        headers["Content-Length"] = str(len(body))
    reader.started = started = time.perf_counter()
    try:
        async with asyncio.timeout(target.timeout_s):
            if native is not None:
                parts = body.parts if isinstance(body, Spliced) else body
                answer = await native.request(method, path_qs, headers, parts, target.timeout_s)
                try:
                    if on_head is not None:
                        on_head(answer.headers)
                    await reader.read(answer)
                finally:
                    answer.release()  # kept only if read whole
            else:
                async with session.request(
                    method,
                    target.url + path_qs,
                    data=data,
                    headers=headers,
                    allow_redirects=False,
                    auto_decompress=False,
                ) as response:
                    if on_head is not None:
                        on_head(response.headers)
                    await reader.read(AiohttpAnswer(response))
            completion = await reader.completion()
    except TimeoutError:
        reader.abandon()
        return Completion(
            error=f"timed out after {target.timeout_s:g}s", latency_s=time.perf_counter() - started
        ), "timeout"
    except (aiohttp.ClientError, OSError, UpstreamError) as error:
        reader.abandon()
        # Kept whole: the recorder scrubs it, then cuts it (`storage.max_text_bytes`). Cut
        # here, before the scrub, it could keep part of a credential it quotes (a URL's query
        # key). Too long, it is dropped whole: held unscrubbed and uncharged until recorded.
        message = f"{type(error).__name__}: {error}"
        if len(message) > MAX_ERROR_CHARS:
            message = f"{type(error).__name__} (its {len(message)}-character message not kept)"
        return Completion(error=message, latency_s=time.perf_counter() - started), "error"
    except BaseException:
        reader.abandon()
        raise
    return completion, "ok" if completion.ok else "error"
