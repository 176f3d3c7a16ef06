"""`[sampling]`: which requests are mirrored, and the bounds on shadow work.

`sampling.key` is resolved at load into a `StickyKey`, so the request path reads a typed
value and never splits the string again:

    SamplingConfig(key="header:x-user").key == StickyKey("header", "x-user")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator
from shadowtap.config_base import ApiPath, DialectName, MiB, Rate, Strict

# An HTTP field name is a token (RFC 9110 5.1): a name with a space or a colon never matches.
HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True, slots=True)
class StickyKey:
    """Where a request's sticky-sampling value is read: a header (matched case-insensitively)
    or a top-level field of the JSON body. Requests with the same value are sampled alike."""

    source: Literal["header", "body"]
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


def parse_sticky_key(value: Any) -> StickyKey:
    """`header:<name>` or `body:<field>` as a `StickyKey`; anything else raises ValueError."""
    if isinstance(value, StickyKey):
        return value
    shape = f"must be 'header:<name>' or 'body:<field>' (got {value!r})"
    if not isinstance(value, str):
        raise ValueError(shape)
    source, sep, name = value.partition(":")
    if source == "header" and sep and HEADER_TOKEN.fullmatch(name):
        return StickyKey("header", name)
    if source == "body" and sep and name:
        return StickyKey("body", name)
    raise ValueError(shape)


SampleKey = Annotated[
    StickyKey, BeforeValidator(parse_sticky_key), PlainSerializer(str, return_type=str)
]


class SamplingConfig(Strict):
    rate: Rate = 0.05
    routes: list[str] = ["/v1/chat/completions"]
    # The API of a route at a non-standard path (standard ones are known: /v1/chat/completions,
    # /v1/responses, /v1/messages, /v1/embeddings). A sampled route of unknown API is read as
    # OpenAI chat, as before, and never translated for a candidate of another API.
    route_dialects: dict[ApiPath, DialectName] = {}
    key: SampleKey | None = None
    max_inflight: Annotated[int, Field(ge=0)] = 64
    max_per_second: Annotated[float, Field(ge=0)] = 50.0
    # Byte and time bounds on shadow work (see shadowtap.budget). A request body above
    # max_body_bytes is forwarded but not sampled: 2 MiB holds ~500k tokens of text, past
    # every common model's context window, while one sampled request costs ~3x its size.
    max_body_bytes: Annotated[int, Field(gt=0)] = 2 * MiB
    # Everything held for shadows, scoring and recording; over it, requests are not sampled
    # (0 = no limit). Well under the 1 GiB the shipped sidecar gets, with room for the rest.
    max_held_bytes: Annotated[int, Field(ge=0)] = 256 * MiB
    # One answer read for shadowing (each shadow's and the primary's side copy): a 16k-token
    # answer streamed with OpenAI's ~220-byte events is ~3.5 MB.
    max_answer_bytes: Annotated[int, Field(gt=0)] = 4 * MiB
    # Per shadow target: bytes read per second (0 = no limit) and the share of the event loop
    # its answers may take to parse (0 = no limit); over either, reading waits (TCP
    # backpressure slows the target) and new shadows to it are shed.
    max_read_bytes_per_second: Annotated[int, Field(ge=0)] = 8 * MiB
    max_loop_share: Annotated[float, Field(ge=0, le=1)] = 0.05

    @field_validator("routes")
    @classmethod
    def _routes_are_paths(cls, value: list[str]) -> list[str]:
        for route in value:
            if not route.startswith("/"):
                raise ValueError(f"routes must start with '/' (got {route!r})")
        return value
