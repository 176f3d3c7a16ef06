"""Scorer types by name, from the entry-point group `shadowtap.scorers`.

Built-ins are registered exactly like third-party scorers, in `pyproject.toml`:

    [project.entry-points."shadowtap.scorers"]
    exact_match = "shadowtap.scorers.exact_match:ExactMatch"

so installing a package that declares an entry point in that group is all it takes to make
`type = "its_name"` usable in `[scorers.NAME]`. The config loader resolves each table once
(`resolve_scorers`: class and typed options); the proxy and `replay` build scorers from those
specs (`build_scorers`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError
from shadowtap.config_base import ConfigError, describe
from shadowtap.config_scorers import ScorerSpec
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


def resolve_scorers(tables: dict[str, Any]) -> dict[str, ScorerSpec]:
    """One `ScorerSpec` per `[scorers.NAME]` table, in config order: the class its `type`
    names and the table validated by that class's `Options`. The first problem raises
    `ConfigError("config error: scorers.NAME.KEY: ...")`. Called once, by the config loader."""
    registered = available() if tables else {}
    specs: dict[str, ScorerSpec] = {}
    for name, table in tables.items():
        if not NAME.fullmatch(name):
            raise ConfigError(
                f"config error: scorers.{name}: scorer name must match [A-Za-z0-9_.-]{{1,64}}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"config error: scorers.{name}: must be a table")
        type_name = table.get("type")
        if type_name is None:
            raise ConfigError(f"config error: scorers.{name}.type: required key is missing")
        if not isinstance(type_name, str):
            raise ConfigError(f"config error: scorers.{name}.type: must be a string")
        cls = load_type(type_name, registered, f"scorers.{name}.type")
        try:
            options = cls.Options.model_validate(table)
        except ValidationError as error:
            raise ConfigError(describe(error, ("scorers", name))) from None
        specs[name] = ScorerSpec(name, type_name, cls, options)
    return specs


def build_scorers(specs: Mapping[str, ScorerSpec]) -> list[Scorer[Any]]:
    """A fresh scorer per resolved spec, in config order. A plug-in whose constructor raises
    stops the start with `ConfigError("config error: scorers.NAME: cannot build ...")`."""
    scorers: list[Scorer[Any]] = []
    for name, spec in specs.items():
        try:
            scorers.append(spec.build())
        except Exception as error:
            raise ConfigError(
                f"config error: scorers.{name}: cannot build {spec.kind!r}: "
                f"{type(error).__name__}: {error}"
            ) from None
    return scorers
