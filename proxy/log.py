"""structlog set-up: one JSON object per line on stderr, through a list of small processors.

No log line shows a secret: values under secret-named keys are dropped, and every string in an
event (nested ones and the formatted exception included) is scrubbed of credential shapes and
of the exact secrets registered at start:

    configure_logging(config.server.log_level)
    add_secrets(secret_values(config))   # candidate and judge keys, header values, tokens
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from pydantic import BaseModel, SecretStr
from shadowtap.redact import ExactSecrets, redact

# Keys whose values must never reach a log line, whatever a call site passes.
DROPPED_KEYS = frozenset({"authorization", "api_key", "headers", "body", "request_body", "text"})
# Names under which a plain config table (a scorer's options) holds a secret.
SECRET_OPTION_NAMES = frozenset(
    {"api_key", "token", "admin_token", "password", "secret", "authorization", "x-api-key"}
)
MAX_DEPTH = 8  # nested values deeper than this are not logged


class _Known:
    """The exact secrets registered with `add_secrets` (swapped whole: readers need no lock)."""

    values: frozenset[str] = frozenset()
    secrets: ExactSecrets | None = None


def add_secrets(values: Iterable[str]) -> None:
    """Register exact values no log line may show (the configured keys, the admin token).
    Adds to what was registered before; shapes are caught without registering."""
    known = _Known.values | {v for v in values if isinstance(v, str)}
    _Known.secrets = ExactSecrets(known) or None
    _Known.values = known


def secret_values(config: Any) -> list[str]:
    """Every secret in a config: `SecretStr` values anywhere in it, and the strings a table or
    a scorer's options hold under a secret name or in its `headers`."""
    found: list[str] = []

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str):
            if secret:
                found.append(value)
        elif isinstance(value, BaseModel):  # a plug-in scorer's options may hold a plain str
            for name in type(value).model_fields:
                walk(getattr(value, name), name.lower() in SECRET_OPTION_NAMES)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):  # a ScorerSpec
            for field in dataclasses.fields(value):
                walk(getattr(value, field.name), False)
        elif isinstance(value, dict):
            for key, item in value.items():
                name = str(key).lower()
                walk(item, secret or name in SECRET_OPTION_NAMES or name == "headers")
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, secret)

    walk(config, False)
    return found


EventDict = MutableMapping[str, Any]


@functools.lru_cache(maxsize=4096)  # the same few keys, line after line: each judged once
def _secret_key(key: object) -> bool:
    # "Authorization", "X-Api-Key" and "api_key" name the same thing; a key is compared the way
    # HTTP compares header names, so a call site's spelling cannot let a value through.
    name = str(key).lower().replace("-", "_")
    return name in DROPPED_KEYS or name in SECRET_OPTION_NAMES or name.endswith("_api_key")


def _drop(value: Any, depth: int) -> Any:
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return "[nested]"
        return {
            key: "[dropped]" if _secret_key(key) else _drop(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            return "[nested]"
        return [_drop(item, depth + 1) for item in value]
    return value


def drop_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Values under a secret-named key are dropped at any depth and in any spelling."""
    for key, value in event_dict.items():
        if _secret_key(key):
            event_dict[key] = "[dropped]"
        elif isinstance(value, dict | list | tuple):  # only a container holds keys of its own
            event_dict[key] = _drop(value, 0)
    return event_dict


def _scrub(value: Any, secrets: ExactSecrets | None, depth: int) -> Any:
    if isinstance(value, str):
        return redact(value, pii=False, secrets=secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_DEPTH:
        return "[nested]"
    if isinstance(value, dict):
        return {
            _scrub(str(k), secrets, depth + 1): _scrub(v, secrets, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, secrets, depth + 1) for v in value]
    # Anything else (an exception, a path, a URL) is rendered as its text, scrubbed.
    return redact(str(value), pii=False, secrets=secrets)


def scrub_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Upstream error messages often echo the key they rejected: never let one reach a log.
    Runs after the exception is formatted, so a traceback is scrubbed too."""
    secrets = _Known.secrets
    for key, value in event_dict.items():
        event_dict[key] = _scrub(value, secrets, 0)
    return event_dict


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=processors(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def processors() -> list[Any]:
    """The pipeline, in order; tests render through it to see exactly what a line holds."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_secrets,
        structlog.processors.format_exc_info,
        scrub_secrets,
        structlog.processors.JSONRenderer(),
    ]


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
