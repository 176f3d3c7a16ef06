"""The one config file, `shadowtap.toml`, parsed strictly and resolved once at load.

Every table forbids unknown keys; every error names the key it is about, as one line:

    config error: candidates.small.rate: must be between 0 and 1 (got 1.5)

`${NAME}` in any string value is replaced from the environment before validation; an unset
variable is an error naming the key that used it. Secrets (`api_key`, `admin_token`, header
values) are held as `SecretStr` so that printing the config never shows them.

What `load_config` returns is resolved: `[scorers.*]` tables are `ScorerSpec`s (the class and
its typed options, checked through the scorer registry), `sampling.key` is a `StickyKey`.
Commands that need only some tables (`report`: gates, scorers, report; `export`: storage) read
the same file through `load_tables`, which substitutes and validates only those tables (the
proxy's secrets need not be set where a report runs) with the same messages.

The tables live beside this module, one file per concern: `config_server` ([server],
[storage]), `config_targets` ([primary], [candidates.*], [secondary]), `config_sampling`,
`config_scorers`, `config_report` ([gates], [report]) and `config_base` (shared types).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from shadowtap.config_base import (
    ConfigError,
    HostPort,
    HttpUrl,
    PositiveSeconds,
    Price,
    Rate,
    Strict,
    describe,
    is_loopback,
    split_host_port,
)
from shadowtap.config_report import GatesConfig, ReportConfig
from shadowtap.config_sampling import SamplingConfig, StickyKey, parse_sticky_key
from shadowtap.config_scorers import ScorerSpec, ScorerSpecs
from shadowtap.config_server import ServerConfig, StorageConfig
from shadowtap.config_targets import (
    CandidateConfig,
    Pricing,
    PrimaryConfig,
    SecondaryConfig,
    ShadowTargetConfig,
)

__all__ = [
    "CandidateConfig",
    "Config",
    "ConfigError",
    "ExportTables",
    "GatesConfig",
    "HostPort",
    "HttpUrl",
    "PositiveSeconds",
    "Price",
    "Pricing",
    "PrimaryConfig",
    "Rate",
    "ReportConfig",
    "ReportTables",
    "SamplingConfig",
    "ScorerSpec",
    "SecondaryConfig",
    "ServerConfig",
    "ShadowTargetConfig",
    "StickyKey",
    "StorageConfig",
    "Strict",
    "describe",
    "is_loopback",
    "load_config",
    "load_tables",
    "masked",
    "parse_config",
    "parse_sticky_key",
    "parse_tables",
    "read_toml",
    "route_dialect",
    "route_dialects",
    "split_host_port",
    "substitute_env",
]

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
RESERVED_TARGETS = frozenset({"primary", "secondary"})
TARGET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Config(Strict):
    """The whole file, resolved: what `serve`, `check-config`, `replay` and the demo use."""

    server: ServerConfig = ServerConfig()
    primary: PrimaryConfig
    sampling: SamplingConfig = SamplingConfig()
    candidates: dict[str, CandidateConfig] = {}
    secondary: SecondaryConfig = SecondaryConfig()
    scorers: ScorerSpecs = {}
    storage: StorageConfig = StorageConfig()
    gates: GatesConfig = GatesConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("candidates")
    @classmethod
    def _candidate_names(cls, value: dict[str, CandidateConfig]) -> dict[str, CandidateConfig]:
        for name in value:
            if name in RESERVED_TARGETS:
                raise ValueError(f"candidate name {name!r} is reserved")
            if not TARGET_NAME.fullmatch(name):
                raise ValueError(f"candidate name {name!r} must match [A-Za-z0-9_.-]{{1,64}}")
        return value

    @model_validator(mode="after")
    def _client_credentials_stay_with_their_provider(self) -> Config:
        """A client's key is for its provider: never forwarded to a candidate of another."""
        for name, candidate in self.candidates.items():
            if not candidate.forward_client_auth or candidate.dialect is None:
                continue
            for route in self.sampling.routes:
                source = route_dialect(route, self.sampling.route_dialects)
                if source is not None and provider(source) != provider(candidate.dialect):
                    # Not a ValueError: pydantic would file it under "(top level)".
                    raise ConfigError(
                        f"config error: candidates.{name}.forward_client_auth: the clients "
                        f"of {route} authenticate with {provider(source)}, and {name} speaks "
                        f"{candidate.dialect}: set candidates.{name}.api_key instead"
                    )
        return self


def provider(dialect: str) -> str:
    """Who issues the credentials a dialect's clients send."""
    return "Anthropic" if dialect.startswith("anthropic") else "OpenAI"


def route_dialect(route: str, overrides: Mapping[str, str]) -> str | None:
    """The API of a route: configured (`sampling.route_dialects`), else known from its path."""
    from shadowtap.dialects.tables import DIALECT_OF_PATH  # pure tables, no request path

    return overrides.get(route) or DIALECT_OF_PATH.get(route)


def route_dialects(sampling: SamplingConfig) -> dict[str, str]:
    """Every sampled route whose API is known, with that API, resolved once at start."""
    known = {route: route_dialect(route, sampling.route_dialects) for route in sampling.routes}
    return {route: dialect for route, dialect in known.items() if dialect is not None}


class Tables(BaseModel):
    """Some of the file's tables, for a command that needs only those. The other tables are
    neither substituted nor validated, but their names must still be Config's."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ReportTables(Tables):
    """What `shadowtap report` reads: the gates, the scorers (names, types, thresholds) and
    what to slice by."""

    gates: GatesConfig = GatesConfig()
    scorers: ScorerSpecs = {}
    report: ReportConfig = ReportConfig()


class ExportTables(Tables):
    """What `shadowtap export` reads: `storage.bodies` sets the redaction."""

    storage: StorageConfig = StorageConfig()


TablesT = TypeVar("TablesT", bound=Tables)


def substitute_env(value: Any, environ: dict[str, str], path: str = "") -> Any:
    """Replace `${NAME}` in every string, recursively; unset names raise naming the key."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"config error: {path}: environment variable {name} is not set")
            return environ[name]

        return ENV_PATTERN.sub(lookup, value)
    if isinstance(value, dict):
        return {
            k: substitute_env(v, environ, f"{path}.{k}" if path else k) for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute_env(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _environ(environ: dict[str, str] | None) -> dict[str, str]:
    return dict(os.environ) if environ is None else environ


def parse_config(raw: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    """A parsed TOML document as a resolved `Config`; `ConfigError` names the first bad key."""
    resolved = substitute_env(raw, _environ(environ))
    try:
        return Config.model_validate(resolved)
    except ValidationError as error:
        raise ConfigError(describe(error)) from None


def parse_tables(
    raw: dict[str, Any], model: type[TablesT], environ: dict[str, str] | None = None
) -> TablesT:
    """Only `model`'s tables of a parsed TOML document, with `parse_config`'s messages."""
    for key in raw:
        if key not in Config.model_fields:
            raise ConfigError(f"config error: {key}: unknown key")
    wanted = {key: raw[key] for key in model.model_fields if key in raw}
    resolved = substitute_env(wanted, _environ(environ))
    try:
        return model.model_validate(resolved)
    except ValidationError as error:
        raise ConfigError(describe(error)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """The file as a TOML document; an unreadable file or bad TOML is a `ConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"config error: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config error: {path} is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config error: {path} is not valid TOML: {error}") from None


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    return parse_config(read_toml(path), environ)


def load_tables(
    path: str | Path, model: type[TablesT], environ: dict[str, str] | None = None
) -> TablesT:
    return parse_tables(read_toml(path), model, environ)


def masked(config: BaseModel) -> dict[str, Any]:
    """The resolved config as plain data with every secret shown as '***'."""
    return config.model_dump(mode="json")  # SecretStr dumps as '**********'
