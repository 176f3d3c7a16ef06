"""What every config table shares: the error type, its one-line message, field types.

Every error names the key it is about, as one line:

    config error: candidates.small.rate: must be between 0 and 1 (got 1.5)
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

MiB = 1024 * 1024


class ConfigError(Exception):
    """The config cannot be used; the message is one line naming the key."""


# A URL's `user:secret@` was sent nowhere (the upstream client drops it) but printed wherever
# the URL is: refused, and the value is never echoed (`describe`).
CREDENTIAL_IN_URL = "must not carry a user or password (`user:secret@`): send keys in headers"


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host (got {value!r})")
    if parts.username is not None or parts.password is not None:
        raise ValueError(CREDENTIAL_IN_URL)
    if parts.query or parts.fragment:
        raise ValueError(f"must not carry a query or fragment (got {value!r})")
    return value.rstrip("/")


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT (got {value!r})")
    return value


def _api_path(value: str) -> str:
    if not value.startswith("/") or "?" in value or "#" in value:
        raise ValueError(f"must be a path starting with '/', without a query (got {value!r})")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
ApiPath = Annotated[str, AfterValidator(_api_path)]
# The APIs shadowtap understands (`shadowtap.dialects.DIALECTS`; a test keeps the two equal).
DialectName = Literal["openai-chat", "openai-responses", "anthropic-messages", "openai-embeddings"]
HostPort = Annotated[str, AfterValidator(_host_port)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveSeconds = Annotated[float, Field(gt=0)]
Price = Annotated[float, Field(ge=0)]


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """A literal loopback address (or `localhost`): only this machine can connect to it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Keys whose values are never echoed in an error message.
SECRET_FIELDS = ("api_key", "headers", "admin_token")


def describe(error: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """pydantic's first error as one line naming the key; secret values are never echoed."""
    first = error.errors()[0]
    loc = (*prefix, *(str(part) for part in first["loc"]))
    key = ".".join(loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"config error: {key}: unknown key"
    if first["type"] == "missing":
        return f"config error: {key}: required key is missing"
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    secret = any(part in SECRET_FIELDS for part in loc)
    quiet = (
        secret or isinstance(got, dict | list) or "got" in message or message == CREDENTIAL_IN_URL
    )
    return f"config error: {key}: {message}{'' if quiet else f' (got {got!r})'}"
