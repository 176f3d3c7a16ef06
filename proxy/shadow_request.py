"""What a shadow target is sent: its body, its path and its API's headers.

A target speaks the route's API unless its config names another (`candidates.NAME.dialect`).
Speaking the route's API, it gets the client's request as it came — the same bytes, only
`model` replaced when it sets one — at the client's path. Speaking another, it gets the request
translated into its API (`shadowtap.dialects.translate`) at that API's path (or its own
`path`); a request with no faithful translation raises `Untranslatable`, and the shadow is
recorded as skipped with the reason instead of asking a different question.

Example:
    bodies = ShadowBodies(body, request_json, "openai-chat", header_names)
    bodies.for_target(claude)           # the Messages API body, or Untranslatable
    shadow_path("/v1/chat/completions", "openai-chat", claude)    # "/v1/messages"
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from shadowtap.config import Config
from shadowtap.dialects import DIALECTS, RenderOptions, Untranslatable, translate
from shadowtap.dialects import embeddings as embeddings_dialect
from shadowtap.dialects.neutral import DEFAULT_OPTIONS
from shadowtap.dialects.tables import OPENAI_CHAT, OPENAI_EMBEDDINGS, REQUIRED_HEADERS
from shadowtap.dialects.tables import target_headers as api_headers
from shadowtap.exchange import Role
from shadowtap.headers import ShadowHeaders
from shadowtap.pricing import Prices
from shadowtap.urls import shadow_target

__all__ = [
    "ShadowBodies",
    "ShadowTarget",
    "Spliced",
    "UnencodableBody",
    "Untranslatable",
    "shadow_headers",
    "shadow_path",
    "shadow_targets",
    "translated_bodies",
]


@dataclass(frozen=True, slots=True)
class ShadowTarget:
    name: str
    role: Role
    url: str
    timeout_s: float
    rate: float
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    forward_client_auth: bool = False
    prices: Prices = field(default_factory=Prices)
    forward_query: frozenset[str] = frozenset()  # client query parameters this target gets
    dialect: str | None = None  # the API it speaks; None: each route's own
    path: str | None = None  # where it serves that API, if not at the API's standard path
    render: RenderOptions = DEFAULT_OPTIONS  # for a request translated into its API
    same_tokenizer: bool = False  # token-id embeddings inputs may go to its other model
    # Its headers in each API it was asked in, worked out on first use (`shadow_headers`).
    _headers: dict[str | None, ShadowHeaders] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def secrets(self) -> tuple[str, ...]:
        """The configured values that authenticate us with this target."""
        return tuple(v for v in (self.api_key, *self.headers.values()) if v)

    def speaks(self, route_dialect: str | None) -> str:
        """The API this target is asked in on a route of `route_dialect` (None: unknown,
        which is read as OpenAI chat, as before dialects)."""
        return self.dialect or route_dialect or OPENAI_CHAT

    def translates(self, route_dialect: str | None) -> bool:
        """True when a request on such a route reaches this target in another API."""
        return self.dialect is not None and self.dialect != (route_dialect or OPENAI_CHAT)

    def reads_parsed(self, route_dialect: str | None) -> bool:
        """True when this target's body is built from the parsed request (a translation, or
        an embeddings request's token ids checked against its model), not from the bytes."""
        if self.translates(route_dialect):
            return True
        return route_dialect == OPENAI_EMBEDDINGS and self.model is not None

    def header_plan(self, route_dialect: str | None) -> ShadowHeaders:
        """Its headers when asked on a route of `route_dialect`: worked out once per API."""
        plan = self._headers.get(route_dialect)
        if plan is None:
            speaks = self.speaks(route_dialect)
            required = REQUIRED_HEADERS.get(speaks, {})
            auth = {k: v for k, v in api_headers(speaks, self.api_key).items() if k not in required}
            plan = self._headers[route_dialect] = ShadowHeaders(
                auth,
                self.headers,
                self.forward_client_auth,
                defaults=required,
                same_dialect=not self.translates(route_dialect),
            )
        return plan

    @property
    def body_key(self) -> str | None:
        """Targets with the same key get the same body; None: the client's own bytes."""
        if self.model is None and self.dialect is None:
            return None
        return f"{self.dialect or ''}|{self.model or ''}"


def shadow_targets(config: Config) -> list[ShadowTarget]:
    """The secondary (when its rate is above 0) and every candidate, in config order."""
    targets = []
    secondary = config.secondary
    if secondary.rate > 0:
        targets.append(
            ShadowTarget(
                name="secondary",
                role="secondary",
                url=config.primary.url,
                timeout_s=secondary.timeout_s,
                rate=secondary.rate,
                api_key=secondary.api_key.get_secret_value() if secondary.api_key else None,
                headers={k: v.get_secret_value() for k, v in secondary.headers.items()},
                forward_client_auth=secondary.forward_client_auth,
                prices=Prices.of(config.primary),
                forward_query=frozenset(secondary.forward_query),
            )
        )
    for name, candidate in config.candidates.items():
        targets.append(
            ShadowTarget(
                name=name,
                role="candidate",
                url=candidate.url,
                timeout_s=candidate.timeout_s,
                rate=candidate.rate,
                model=candidate.model,
                api_key=candidate.api_key.get_secret_value() if candidate.api_key else None,
                headers={k: v.get_secret_value() for k, v in candidate.headers.items()},
                forward_client_auth=candidate.forward_client_auth,
                prices=Prices.of(candidate),
                forward_query=frozenset(candidate.forward_query),
                dialect=candidate.dialect,
                path=candidate.path,
                render=RenderOptions(default_max_tokens=candidate.max_tokens),
                same_tokenizer=candidate.same_tokenizer,
            )
        )
    return targets


def translated_bodies(targets: Iterable[ShadowTarget], route_dialect: str | None) -> int:
    """How many distinct bodies translating a request on such a route for `targets` makes
    (targets with the same key share one)."""
    return len({t.body_key for t in targets if t.translates(route_dialect)})


class UnencodableBody(ValueError):
    """The request cannot be re-encoded for a target (e.g. nested past orjson's depth limit)."""


# The top-level walk skips each value with the standard library's C scanner (no Python code
# per token: a 60 kB chat of 200 messages in ~0.07 ms, a 1 MB prompt in ~1.6 ms), on the body
# decoded as latin-1, one character per byte, so its indices are the body's byte offsets.
# Strict, like orjson: a control character inside a string is refused.
_scan_value = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # (value, end)
_SPACE = re.compile(r"[ \t\r\n]*")  # matched in place: a long body is never copied to strip it
_BYTE_SPACE = re.compile(rb"[ \t\r\n]*")


@dataclass(frozen=True, slots=True)
class Spliced:
    """The client's body with its top-level `model` value replaced, kept as views of the
    client's bytes around the new value: sent piece by piece (`call_shadow`), never joined,
    so a long prompt is held once however many targets rewrite its model."""

    parts: tuple[bytes | memoryview, ...]

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    async def stream(self) -> AsyncIterator[bytes | memoryview]:
        for part in self.parts:
            yield part


def model_value_spans(body: bytes) -> list[tuple[int, int]] | None:
    """Where the top-level `model` values of a JSON object's bytes are: (start, end) spans;
    [] when it has none; None when the body is not one JSON object the walk reads (nested
    deeper than the interpreter's recursion limit, say): the caller re-encodes instead.

    Keys are compared decoded, so an escaped spelling (`"mod\\u0065l"`) counts, and every
    duplicate is found (orjson keeps the last; a candidate's parser may keep the first)."""
    text = body.decode("latin-1")  # a view of every byte as one character, never fails
    at = _SPACE.match(text).end()  # type: ignore[union-attr]  # matches the empty string
    if text[at : at + 1] != "{":
        return None
    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    spans: list[tuple[int, int]] = []
    empty = text[at : at + 1] == "}"
    try:
        while not empty:
            if text[at : at + 1] != '"':
                return None
            key, at = scanstring(text, at + 1)
            at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
            if text[at : at + 1] != ":":
                return None
            start = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            _, at = _scan_value(text, start)
            if key == "model":
                spans.append((start, at))
            at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
            if text[at : at + 1] == "}":
                break
            if text[at : at + 1] != ",":
                return None
            at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    except (ValueError, StopIteration, RecursionError):
        return None  # not JSON where a key or a value belongs, or nested past the stack
    rest = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    return spans if rest == len(text) else None


def splice_model(body: bytes, model: str) -> Spliced | None:
    """`body` (a JSON object) with every top-level `model` value replaced by `model`, or the
    key added first when it has none; None when the scan cannot say (see model_value_spans)."""
    spans = model_value_spans(body)
    if spans is None:
        return None
    value = orjson.dumps(model)
    view = memoryview(body)
    if not spans:  # no model: the key goes first, before what the object holds
        opening = body.index(b"{") + 1
        inside = _BYTE_SPACE.match(body, opening).end()  # type: ignore[union-attr]
        empty = body[inside : inside + 1] == b"}"
        return Spliced(
            (view[:opening], b'"model":' + value + (b"" if empty else b","), view[opening:])
        )
    parts: list[bytes | memoryview] = []
    done = 0
    for start, end in spans:
        parts += [view[done:start], value]
        done = end
    parts.append(view[done:])
    return Spliced(tuple(parts))


class ShadowBodies:
    """The request as each target should get it (see the module docstring).

    Built inside each shadow's task (never on the primary's path), once per distinct body.
    `request_json` may be None when no target needs anything but the client's bytes.
    `charge` is told the size of each body re-encoded because its model could not be replaced
    in the client's bytes (translations are charged at admission: `request_hold_bytes`).
    """

    def __init__(
        self,
        body: bytes,
        request_json: dict[str, Any] | None,
        dialect: str | None = OPENAI_CHAT,
        header_names: Iterable[str] = (),
        charge: Callable[[int], None] | None = None,
    ) -> None:
        self.body = body
        self.request_json = request_json
        self.dialect = dialect  # the route's API; None: not known
        self.header_names = tuple(header_names)
        self._charge = charge
        self._rewritten: dict[str | None, bytes | Spliced] = {}
        self._translated: dict[tuple[str, str | None, RenderOptions], bytes] = {}

    def for_target(self, target: ShadowTarget) -> bytes | Spliced:
        """The body for `target`; raises `Untranslatable` (or `UnencodableBody`) when there is
        none that asks the client's question."""
        if not target.translates(self.dialect):
            if self.dialect == OPENAI_EMBEDDINGS and target.model is not None:
                self._check_tokenizer(target)
            return self.for_model(target.model)
        if self.dialect is None:
            raise Untranslatable("the route's API is not known (see sampling.route_dialects)")
        if self.request_json is None:
            raise Untranslatable("the request is not a JSON object")
        assert target.dialect is not None  # translates() says so
        key = (target.dialect, target.model, target.render)
        if key not in self._translated:
            self._translated[key] = translate(
                self.request_json,
                self.dialect,
                target.dialect,
                target.model,
                target.render,
                self.header_names,
            )
        return self._translated[key]

    def for_model(self, model: str | None) -> bytes | Spliced:
        """The client's request with `model` replaced (the client's bytes when None): the
        client's bytes around the new value (`splice_model`), or, for a body the scan does
        not read, the parsed request encoded again."""
        if model is None:
            return self.body
        if model not in self._rewritten:
            rewritten: bytes | Spliced | None = splice_model(self.body, model)
            if rewritten is None:
                rewritten = self._reencoded(model)
                if rewritten is not self.body and self._charge is not None:
                    self._charge(len(rewritten))  # a whole copy, held while the shadows run
            self._rewritten[model] = rewritten
        return self._rewritten[model]

    def _reencoded(self, model: str) -> bytes:
        request_json = self.request_json
        if request_json is None:
            try:
                request_json = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                request_json = None
        if not isinstance(request_json, dict):
            return self.body  # not a JSON object: nothing to rewrite (sampling never sends one)
        try:
            return orjson.dumps({**request_json, "model": model})
        except orjson.JSONEncodeError as error:
            raise UnencodableBody(f"the request cannot be re-encoded ({error})") from None

    def _check_tokenizer(self, target: ShadowTarget) -> None:
        """Token ids mean other text to another model's tokenizer: never sent to it unless
        the target vouches for the same tokenizer."""
        if self.request_json is None or target.same_tokenizer:
            return
        request = embeddings_dialect.parse(self.request_json)
        embeddings_dialect.render(request, target.model)  # raises for foreign token ids


def shadow_path(path_qs: str, route_dialect: str | None, target: ShadowTarget) -> str:
    """The path (and the query parameters the target may see) a shadow is sent to: the
    client's, unless the target serves its API elsewhere (`path`) or speaks another API."""
    path, sep, query = path_qs.partition("?")
    if target.path is not None:
        path = target.path
    elif target.translates(route_dialect):
        path = DIALECTS[target.speaks(route_dialect)].path
    return shadow_target(path + sep + query, target.forward_query)


def shadow_headers(
    client_headers: CIMultiDictProxy[str], target: ShadowTarget, route_dialect: str | None
) -> CIMultiDict[str]:
    """The target's headers in its API: its key where that API takes one (`Authorization:
    Bearer`, or Anthropic's `x-api-key`), what the API requires (`anthropic-version`), and
    the client's headers that shape the answer (`headers.ShadowHeaders`)."""
    return target.header_plan(route_dialect).build(client_headers)
