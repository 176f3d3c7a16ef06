"""Upstream URLs are built from the request's parsed path and query, never its raw target.

A request target comes in one of RFC 9112's forms. The origin form (`/v1/chat?x=1`) is what
clients send to a reverse proxy; the absolute form (`http://host/v1/chat`) is legal too and
must be accepted, but its authority names nobody we forward to: shadowtap always sends to the
configured upstream, so only the path and query are kept. Pasting the raw target onto
`primary.url` would put the client's scheme and host into the upstream's host name.

Shadows get less still: the path, and only the query parameters their target allows
(`forward_query`), because a query string can carry the client's credentials (`?api_key=`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import unquote_plus, urlsplit

# Query parameter names that carry credentials (`key`, `api_key`, `access_token`, `sig`, ...).
_CREDENTIAL_NAME = re.compile(r"(?i)key|token|secret|auth|sig|pass|credential|session")
MIN_CREDENTIAL_CHARS = 6  # shorter values are not worth scrubbing from every stored text


def origin_form(raw_target: str) -> str | None:
    """The path and query to forward, exactly as encoded; None for a target we do not serve.

    `/v1/chat?x=1` → itself; `http://any/v1/chat?x=1` → `/v1/chat?x=1`; `*` or `host:443`
    (the asterisk and authority forms, for OPTIONS * and CONNECT) → None.
    """
    if raw_target.startswith("/"):
        return raw_target
    scheme, sep, _ = raw_target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    parts = urlsplit(raw_target)
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    return f"{path}?{parts.query}" if parts.query else path


def query_credentials(query: str) -> list[str]:
    """The decoded values of credential-named query parameters (`?api_key=sk-...`)."""
    values = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        value = unquote_plus(value)
        if len(value) >= MIN_CREDENTIAL_CHARS and _CREDENTIAL_NAME.search(unquote_plus(name)):
            values.append(value)
    return values


def shadow_target(path_qs: str, allowed: Collection[str]) -> str:
    """The path plus the query parameters named in `allowed`, in order and as encoded."""
    path, _, query = path_qs.partition("?")
    if not query or not allowed:
        return path
    kept = [pair for pair in query.split("&") if unquote_plus(pair.partition("=")[0]) in allowed]
    return f"{path}?{'&'.join(kept)}" if kept else path
