"""`Answer`: what is read of an upstream's answer, whichever client fetched it.

Our own client's `UpstreamAnswer` is one. `AiohttpAnswer` makes aiohttp's response another, for
what still goes through aiohttp's client (a HEAD or an upgrade to the primary, LLM judges), so
the relay and `AnswerReader` read both one way.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy


class Answer(Protocol):
    """Its head as attributes, its body from `next_chunk()` or `read()`. Whoever opened it lets
    it go: `UpstreamAnswer.release()`, or the end of aiohttp's `async with` (each keeps the
    connection only when the body was read to its end)."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def headers(self) -> CIMultiDict[str] | CIMultiDictProxy[str]: ...

    @property
    def content_length(self) -> int | None: ...

    async def next_chunk(self) -> bytes:
        """What arrived since the last call (waiting for some); b"" once the body is whole."""

    async def read(self) -> bytes:
        """The rest of the body, whole."""


class AiohttpAnswer:
    """aiohttp's response (opened with `auto_decompress=False`), read as an `Answer`."""

    __slots__ = ("_response", "content_length", "headers", "reason", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.reason = response.reason
        self.headers = response.headers
        self.content_length = response.content_length

    async def next_chunk(self) -> bytes:
        return await self._response.content.readany()

    async def read(self) -> bytes:
        return await self._response.read()
