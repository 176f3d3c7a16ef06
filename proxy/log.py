"""structlog set-up: one JSON object per line on stderr, through a list of small processors."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from shadowtap.redact import redact

# Keys whose values must never reach a log line, whatever a call site passes.
SECRET_KEYS = frozenset({"authorization", "api_key", "headers", "body", "request_body", "text"})


def drop_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in SECRET_KEYS & event_dict.keys():
        event_dict[key] = "[dropped]"
    return event_dict


def scrub_credentials(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Upstream error messages often echo the key they rejected: never let one reach a log."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value, pii=False)
    return event_dict


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_secrets,
            scrub_credentials,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
