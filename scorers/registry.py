"""Scorer types by name, from the entry-point group `shadowtap.scorers`.

Built-ins are registered exactly like third-party scorers, in `pyproject.toml`:

    [project.entry-points."shadowtap.scorers"]
    exact_match = "shadowtap.scorers.exact_match:ExactMatch"

so installing a package that declares an entry point in that group is all it takes to make
`type = "its_name"` usable in `[scorers.NAME]`.
"""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError
from shadowtap.config import ConfigError, describe
from shadowtap.scorers.base import CpuScorer, IoScorer, Scorer

GROUP = "shadowtap.scorers"
# Scorer names become a Prometheus label and a DuckDB value: keep them short and plain.
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def available() -> dict[str, EntryPoint]:
    """Registered scorer types; when two distributions register one name, the error names
    both rather than picking one silently."""
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=GROUP):
        other = found.get(entry.name)
        if other is not None and other.value != entry.value:
            raise ConfigError(
                f"config error: scorer type {entry.name!r} is registered twice "
                f"({other.value} and {entry.value})"
            )
        found[entry.name] = entry
    return found


def load_type(type_name: str, registered: dict[str, EntryPoint], key: str) -> type[Scorer[Any]]:
    entry = registered.get(type_name)
    if entry is None:
        known = ", ".join(sorted(registered)) or "(none installed)"
        raise ConfigError(f"config error: {key}: unknown scorer type {type_name!r}; known: {known}")
    try:
        cls = entry.load()
    except Exception as error:
        raise ConfigError(
            f"config error: {key}: scorer type {type_name!r} ({entry.value}) cannot be loaded: "
            f"{type(error).__name__}: {error}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, CpuScorer | IoScorer)):
        raise ConfigError(
            f"config error: {key}: {entry.value} is not a CpuScorer or IoScorer subclass"
        )
    return cls


def build_scorers(tables: dict[str, dict[str, Any]]) -> list[Scorer[Any]]:
    """One scorer per `[scorers.NAME]` table, in config order; the first problem raises
    `ConfigError("config error: scorers.NAME.KEY: ...")`."""
    registered = available() if tables else {}
    scorers: list[Scorer[Any]] = []
    for name, table in tables.items():
        if not NAME.fullmatch(name):
            raise ConfigError(
                f"config error: scorers.{name}: scorer name must match [A-Za-z0-9_.-]{{1,64}}"
            )
        type_name = table.get("type")
        if not isinstance(type_name, str):
            raise ConfigError(f"config error: scorers.{name}.type: required key is missing")
        cls = load_type(type_name, registered, f"scorers.{name}.type")
        try:
            options = cls.Options.model_validate(table)
        except ValidationError as error:
            raise ConfigError(describe(error, ("scorers", name))) from None
        try:
            scorers.append(cls(name, options))
        except Exception as error:
            raise ConfigError(
                f"config error: scorers.{name}: cannot build {type_name!r}: "
                f"{type(error).__name__}: {error}"
            ) from None
    return scorers
