"""Scorers from `[scorers.NAME]`-shaped tables, the way the config loader resolves them."""

from __future__ import annotations

from typing import Any

from shadowtap.scorers.base import Scorer
from shadowtap.scorers.registry import build_scorers, resolve_scorers


def scorers_from(tables: dict[str, Any]) -> list[Scorer[Any]]:
    """Resolve the tables (a bad one raises `ConfigError` naming its key), then build them."""
    return build_scorers(resolve_scorers(tables))
