"""An HTTP/1.1 client for the relay's hot path, below aiohttp's (see `connection`, `pool`)."""

from shadowtap.upstream.answer import AiohttpAnswer, Answer
from shadowtap.upstream.connection import (
    UpstreamClosed,
    UpstreamConnection,
    UpstreamError,
    UpstreamProtocolError,
)
from shadowtap.upstream.pool import Origin, UpstreamAnswer, UpstreamPool, UpstreamUnreachable

__all__ = [
    "AiohttpAnswer",
    "Answer",
    "Origin",
    "UpstreamAnswer",
    "UpstreamClosed",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamUnreachable",
]
