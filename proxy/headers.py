"""Which headers cross the proxy, in which direction, and the proxy's own error bodies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 §7.6.1: connection-specific fields never travel past the next hop. Host is set for
# the upstream; Content-Length is recomputed from the body actually sent; Expect was answered
# by the proxy (`receive`), which holds the whole body: passed on, it made aiohttp's client
# withhold that body until the primary sent a `100 Continue` it may never send.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}

# Headers that carry the client's identity with its provider: never sent to a shadow target
# unless that target sets `forward_client_auth`.
CLIENT_CREDENTIALS = frozenset(
    {"authorization", "api-key", "x-api-key", "openai-organization", "openai-project", "cookie"}
)
# The only client headers a shadow sees: what shapes the answer, nothing that identifies.
SHADOW_PASSTHROUGH = frozenset({"content-type", "accept", "user-agent"})
# ...and those that shape it in one provider's API only: sent to a target that speaks the
# client's dialect, never to one that gets a translated request.
DIALECT_PASSTHROUGH = frozenset({"openai-beta", "anthropic-version", "anthropic-beta"})

# Header *names* worth keeping with a stored exchange; values are never stored.
STORED_HEADER_NAMES = frozenset(
    {
        "content-type",
        "accept",
        "accept-encoding",
        "user-agent",
        "openai-beta",
        "openai-organization",
        "openai-project",
        "x-stainless-lang",
        "x-stainless-package-version",
    }
)


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    return {
        token.strip().lower()
        for value in headers.getall("connection", [])  # type: ignore[attr-defined]
        for token in value.split(",")
    }


def _without(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], names: frozenset[str]
) -> CIMultiDict[str]:
    """A copy of `headers` without `names` nor the fields its `Connection` header names.

    Copied whole, then deleted from (case-insensitive lookups in C): a quarter of the cost
    of filtering name by name in Python, paid twice on every request."""
    out: CIMultiDict[str] = CIMultiDict(headers)
    for name in names:
        if name in out:
            del out[name]
    if "connection" in headers:
        for token in _connection_tokens(headers):
            out.popall(token, None)
    return out


def upstream_request_headers(
    headers: CIMultiDictProxy[str], client_ip: str | None
) -> CIMultiDict[str]:
    """The client's headers as the primary should see them."""
    out = _without(headers, NOT_FORWARDED)
    if client_ip:
        previous = headers.get("x-forwarded-for")
        out["X-Forwarded-For"] = f"{previous}, {client_ip}" if previous else client_ip
    return out


def downstream_response_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
) -> CIMultiDict[str]:
    """The primary's response headers as the client should see them (Content-Length kept)."""
    return _without(headers, HOP_BY_HOP)


class ShadowHeaders:
    """A shadow target's headers in one API, worked out once (a target keeps one per API it
    is asked in): per request only the client's headers are sifted and added (`build`).

    What a target gets: `defaults` (what its API requires, e.g. a version the client's own
    header overrides when it speaks the same API), the client's headers that shape the
    answer, the client's credentials only with `forward_client_auth` (the config refuses that
    across providers), the target's `extra` headers, and last its `auth` (its API key in its
    API's header: `Authorization: Bearer` or Anthropic's `x-api-key`)."""

    __slots__ = ("_allowed", "_defaults", "_fixed")

    def __init__(
        self,
        auth: Mapping[str, str],
        extra: Mapping[str, str],
        forward_client_auth: bool,
        *,
        defaults: Mapping[str, str] | None = None,
        same_dialect: bool = True,
    ) -> None:
        allowed = SHADOW_PASSTHROUGH | (DIALECT_PASSTHROUGH if same_dialect else frozenset())
        self._allowed = allowed | CLIENT_CREDENTIALS if forward_client_auth else allowed
        fixed: CIMultiDict[str] = CIMultiDict()
        for name, value in (*extra.items(), *auth.items()):
            fixed[name] = value  # the key wins over an extra header of the same name
        required: CIMultiDict[str] = CIMultiDict(defaults or {})
        for name in fixed:
            required.popall(name, None)  # ... and both over a default
        self._defaults = CIMultiDictProxy(required)
        self._fixed = CIMultiDictProxy(fixed)

    def build(self, client_headers: Mapping[str, str]) -> CIMultiDict[str]:
        """The headers for one request carrying `client_headers` (a fresh dict: the caller
        may add to it)."""
        allowed, fixed = self._allowed, self._fixed
        passed = [
            (name, value)
            for name, value in client_headers.items()
            if name.lower() in allowed and name not in fixed  # the target's own win anyway
        ]
        out: CIMultiDict[str] = CIMultiDict(self._defaults)
        if out:
            for name, _ in passed:
                out.popall(name, None)  # the client's own value replaces a default
        out.extend(passed)
        out.extend(fixed)
        return out


def shadow_request_headers(
    client_headers: CIMultiDictProxy[str],
    auth: Mapping[str, str],
    extra: Mapping[str, str],
    forward_client_auth: bool,
    *,
    defaults: Mapping[str, str] | None = None,
    same_dialect: bool = True,
) -> CIMultiDict[str]:
    """The headers a shadow target gets (see `ShadowHeaders`, which a target keeps)."""
    plan = ShadowHeaders(
        auth, extra, forward_client_auth, defaults=defaults, same_dialect=same_dialect
    )
    return plan.build(client_headers)


# Headers whose values are secrets to scrub from whatever is stored or logged.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",  # Azure OpenAI
        "x-api-key",  # Anthropic
        "x-goog-api-key",  # Gemini's OpenAI-compatible endpoint
        "ocp-apim-subscription-key",  # Azure API Management in front of a model
        "cookie",
    }
)
# Shorter values are no real key, and scrubbing them would mangle ordinary words in stored text.
MIN_SECRET_CHARS = 8


def header_credentials(headers: Mapping[str, str]) -> list[str]:
    """The exact secret values in a request's headers: whole values, plus the token of
    `Authorization: Bearer T` and each cookie's value, since an upstream echoes those alone."""
    values: list[str] = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in SECRET_HEADERS:
            continue
        parts = [value]
        if lowered.endswith("authorization"):
            parts.append(value.partition(" ")[2])
        elif lowered == "cookie":
            parts += [cookie.partition("=")[2] for cookie in value.split(";")]
        values += [p.strip() for p in parts if len(p.strip()) >= MIN_SECRET_CHARS]
    return values


def stored_header_names(names: Iterable[str]) -> list[str]:
    return sorted({n.lower() for n in names} & STORED_HEADER_NAMES)


SLICE_VALUE_CHARS = 128  # a tenant or feature label; longer values are cut, once scrubbed


def slice_header_values(headers: CIMultiDictProxy[str], names: tuple[str, ...]) -> dict[str, str]:
    """The values of the `[report] slice_by` headers a request carries (the config refuses
    credential headers), whole: the recorder scrubs each, then cuts it to SLICE_VALUE_CHARS
    (cut first, a key or an address across the cut would be kept in part, unrecognized).
    aiohttp's header limit bounds them."""
    return {name: headers[name] for name in names if name in headers}


def error_response(status: int, message: str, code: str, kind: str) -> web.Response:
    """The proxy's own failures, in OpenAI's error shape so SDKs surface them cleanly."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
