"""The one config file, `shadowtap.toml`, parsed strictly and resolved once at start.

Every table forbids unknown keys; every error names the key it is about, as one line:

    config error: candidates.small.rate: must be between 0 and 1 (got 1.5)

`${NAME}` in any string value is replaced from the environment before validation; an unset
variable is an error naming the key that used it. Secrets (`api_key`, `admin_token`, header
values) are held as `SecretStr` so that printing the config never shows them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

MiB = 1024 * 1024
ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
RESERVED_TARGETS = frozenset({"primary", "secondary"})
MIN_ADMIN_TOKEN_CHARS = 16


class ConfigError(Exception):
    """The config cannot be used; the message is one line naming the key."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host (got {value!r})")
    if parts.query or parts.fragment:
        raise ValueError(f"must not carry a query or fragment (got {value!r})")
    return value.rstrip("/")


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT (got {value!r})")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
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


class ServerConfig(Strict):
    listen: HostPort = "127.0.0.1:8080"
    admin_listen: HostPort = "127.0.0.1:9464"
    max_body_bytes: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024
    shutdown_grace_s: PositiveSeconds = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: bool = True
    # CPU scorers run in this many worker processes (0, once "threads", now means the default:
    # threads cannot be stopped). A pair's scorer running past its time limit (its own
    # timeout_s, else scoring_timeout_s) gets its worker killed and replaced, and an error.
    scoring_processes: Annotated[int, Field(ge=0, le=64)] = 0
    scoring_timeout_s: PositiveSeconds = 2.0
    # Jobs (one per exchange) waiting for a free worker; beyond, pairs are skipped and counted.
    scoring_queue_max: Annotated[int, Field(gt=0)] = 100
    # A pair whose texts (and request body, for a scorer that reads it) are longer is skipped.
    scoring_max_pair_chars: Annotated[int, Field(gt=0)] = 1_000_000
    # /api/* serves stored prompts and answers: it needs `Authorization: Bearer <admin_token>`
    # and is refused when no token is set. /metrics, /healthz and /readyz stay open.
    admin_token: SecretStr | None = None
    # A laptop's convenience: /api/* without a token, allowed only on a loopback admin_listen.
    admin_api_open_on_loopback: bool = False
    # Slow and idle clients, on both listeners (see shadowtap.listener for the reasoning):
    header_timeout_s: PositiveSeconds = 15.0  # a new connection's first request head
    body_timeout_s: PositiveSeconds = 60.0  # a request's whole body, once its head arrived
    idle_timeout_s: PositiveSeconds = 60.0  # keep-alive between requests
    max_connections: Annotated[int, Field(ge=1)] = 4096  # proxy listener; beyond: closed
    admin_max_connections: Annotated[int, Field(ge=1)] = 64

    @field_validator("admin_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # Never echo the value: describe() treats admin_token as a secret key.
        token = value.get_secret_value() if value is not None else None
        if token is not None and len(token) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters")
        if token is not None and not all("!" <= char <= "~" for char in token):
            raise ValueError("must be visible ASCII without spaces (it is sent in a header)")
        return value

    @model_validator(mode="after")
    def _admin_apart_from_proxy(self) -> ServerConfig:
        # The admin API serves data and metrics: an application must never reach it through
        # its OpenAI base URL. Port 0 (pick a free port) is the only shared value allowed.
        host, port = split_host_port(self.listen)
        if port and split_host_port(self.admin_listen) == (host, port):
            raise ValueError("admin_listen must differ from listen (the admin API is private)")
        return self

    @model_validator(mode="after")
    def _open_admin_api_only_on_loopback(self) -> ServerConfig:
        if not self.admin_api_open_on_loopback:
            return self
        if self.admin_token is not None:
            raise ValueError("set admin_token or admin_api_open_on_loopback, not both")
        if not is_loopback(split_host_port(self.admin_listen)[0]):
            raise ValueError(
                "admin_api_open_on_loopback needs a loopback admin_listen such as "
                f"127.0.0.1 (got {self.admin_listen!r})"
            )
        return self


class Pricing(Strict):
    price_per_1k_prompt: Price | None = None
    price_per_1k_completion: Price | None = None


class PrimaryConfig(Pricing):
    url: HttpUrl
    timeout_s: PositiveSeconds = 600.0


class SamplingConfig(Strict):
    rate: Rate = 0.05
    routes: list[str] = ["/v1/chat/completions"]
    key: str | None = None
    max_inflight: Annotated[int, Field(ge=0)] = 64
    max_per_second: Annotated[float, Field(ge=0)] = 50.0
    # Byte and time bounds on shadow work (see shadowtap.budget). A request body above
    # max_body_bytes is forwarded but not sampled: 2 MiB holds ~500k tokens of text, past
    # every common model's context window, while one sampled request costs ~3x its size.
    max_body_bytes: Annotated[int, Field(gt=0)] = 2 * MiB
    # Everything held for shadows, scoring and recording; over it, requests are not sampled
    # (0 = no limit). Well under the 1 GiB the shipped sidecar gets, with room for the rest.
    max_held_bytes: Annotated[int, Field(ge=0)] = 256 * MiB
    # One answer read for shadowing (each shadow's and the primary's side copy): a 16k-token
    # answer streamed with OpenAI's ~220-byte events is ~3.5 MB.
    max_answer_bytes: Annotated[int, Field(gt=0)] = 4 * MiB
    # Per shadow target: bytes read per second (0 = no limit) and the share of the event loop
    # its answers may take to parse (0 = no limit); over either, reading waits (TCP
    # backpressure slows the target) and new shadows to it are shed.
    max_read_bytes_per_second: Annotated[int, Field(ge=0)] = 8 * MiB
    max_loop_share: Annotated[float, Field(ge=0, le=1)] = 0.05

    @field_validator("key")
    @classmethod
    def _key_shape(cls, value: str | None) -> str | None:
        if value is None:
            return value
        kind, sep, name = value.partition(":")
        if kind not in ("header", "body") or not sep or not name:
            raise ValueError(f"must be 'header:<name>' or 'body:<field>' (got {value!r})")
        return value

    @field_validator("routes")
    @classmethod
    def _routes_are_paths(cls, value: list[str]) -> list[str]:
        for route in value:
            if not route.startswith("/"):
                raise ValueError(f"routes must start with '/' (got {route!r})")
        return value


class ShadowTargetConfig(Pricing):
    """What candidates and the secondary share: where to send, how long to wait, what to add."""

    timeout_s: PositiveSeconds = 60.0
    headers: dict[str, SecretStr] = {}
    rate: Rate = 1.0
    # The client's query parameters this target receives (by name); none by default, since a
    # query string can carry the client's credentials (`?api_key=`).
    forward_query: list[str] = []


class CandidateConfig(ShadowTargetConfig):
    url: HttpUrl
    model: str | None = None
    api_key: SecretStr | None = None
    forward_client_auth: bool = False


class SecondaryConfig(ShadowTargetConfig):
    """The primary's model asked again: its disagreement with the primary is the noise floor."""

    rate: Rate = 0.0
    api_key: SecretStr | None = None
    # Same provider as the primary, so the client's own credentials are the natural default.
    forward_client_auth: bool = True


class StorageConfig(Strict):
    path: str = "shadowtap.duckdb"
    queue_max: Annotated[int, Field(gt=0)] = 10_000
    flush_interval_ms: Annotated[int, Field(gt=0)] = 500
    batch_size: Annotated[int, Field(gt=0)] = 2_000
    bodies: Literal["full", "redacted", "none"] = "redacted"
    parquet_dir: str | None = None
    retention_days: Annotated[int, Field(gt=0)] | None = None
    enabled: bool = True


class GatesConfig(Strict):
    """Thresholds `shadowtap report` turns into a verdict per candidate."""

    max_agreement_drop: Annotated[float, Field(ge=0, le=1)] | None = 0.05
    max_p95_latency_ratio: Annotated[float, Field(gt=0)] | None = 1.5
    max_error_rate: Rate | None = 0.02
    max_cost_ratio: Annotated[float, Field(gt=0)] | None = None
    scorers: list[str] | None = None  # which scorers the agreement gate reads; None: all
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    # Bootstrap intervals are too narrow on tiny samples: gates built on them wait for this
    # many pairs before they can pass or fail (the Wilson error-rate interval does not wait).
    # A comparison with the noise floor rests on the smaller of the two samples: both the
    # candidate and the secondary need this many scored pairs.
    min_pairs: Annotated[int, Field(ge=2)] = 30
    # Without a secondary the agreement drop is bounded against perfect agreement (1.0), which
    # over-states it, so it can pass but never fail. Only a primary that always answers the same
    # (temperature 0 on a deterministic deployment) makes 1.0 its true noise floor.
    primary_deterministic: bool = False
    # Where it breaks: no slice of traffic (tool calls, JSON mode, a route, ...) with at least
    # min_slice_pairs scored pairs may be worse than its noise floor by more than this.
    max_slice_drop: Annotated[float, Field(ge=0, le=1)] | None = 0.10
    min_slice_pairs: Annotated[int, Field(ge=2)] = 50
    # Functional reliability, judged on the candidate's answers alone (default: off): the share
    # of applicable answers that are empty, invalid JSON in JSON mode, off their JSON schema,
    # calling tools wrongly, cut off by the token limit, or refusing.
    max_empty_rate: Rate | None = None
    max_invalid_json_rate: Rate | None = None
    max_schema_invalid_rate: Rate | None = None
    max_invalid_tool_call_rate: Rate | None = None
    max_truncation_rate: Rate | None = None
    max_refusal_rate: Rate | None = None

    @field_validator(
        "max_agreement_drop",
        "max_p95_latency_ratio",
        "max_error_rate",
        "max_cost_ratio",
        "max_slice_drop",
        "max_empty_rate",
        "max_invalid_json_rate",
        "max_schema_invalid_rate",
        "max_invalid_tool_call_rate",
        "max_truncation_rate",
        "max_refusal_rate",
        mode="before",
    )
    @classmethod
    def _false_turns_a_gate_off(cls, value: Any) -> Any:
        # TOML has no null: `max_error_rate = false` is how a table switches a default gate off.
        if value is True:  # pydantic would read true as 1.0, silently
            raise ValueError("must be a number, or false to switch the gate off")
        return None if value is False else value


# Header names whose values are credentials or session state: never stored, so never sliced.
SECRET_HEADER_WORDS = (
    "auth",
    "key",
    "token",
    "secret",
    "cookie",
    "session",
    "password",
    "signature",
)
SLICE_PATH = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}")
HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")


class ReportConfig(Strict):
    """[report]: how `shadowtap report` slices traffic besides its built-in dimensions.

    `slice_by` entries are `body:<dotted.path>` (a field of the request body, e.g.
    `body:metadata.feature`) or `header:<name>` (e.g. `header:x-tenant`). The proxy stores the
    values of exactly these headers (nothing else of any header); a name that carries
    credentials or session state is refused.
    """

    slice_by: Annotated[list[str], Field(max_length=8)] = []

    @field_validator("slice_by")
    @classmethod
    def _slice_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            kind, sep, name = spec.partition(":")
            if kind == "body" and sep and SLICE_PATH.fullmatch(name):
                continue
            if kind == "header" and sep and HEADER_NAME.fullmatch(name):
                lowered = name.lower()
                if any(word in lowered for word in SECRET_HEADER_WORDS) or lowered in (
                    "authorization",
                    "proxy-authorization",
                    "api-key",
                    "openai-organization",
                    "openai-project",
                ):
                    raise ValueError(f"{spec!r}: a credential header is never stored or sliced")
                continue
            raise ValueError(
                f"entries must be 'body:<field.path>' or 'header:<name>' (got {spec!r})"
            )
        if len(set(value)) != len(value):
            raise ValueError("entries must be unique")
        return value

    def slice_headers(self) -> tuple[str, ...]:
        """The lower-cased header names whose values the proxy stores."""
        return tuple(s.partition(":")[2].lower() for s in self.slice_by if s.startswith("header:"))


class Config(Strict):
    server: ServerConfig = ServerConfig()
    primary: PrimaryConfig
    sampling: SamplingConfig = SamplingConfig()
    candidates: dict[str, CandidateConfig] = {}
    secondary: SecondaryConfig = SecondaryConfig()
    scorers: dict[str, dict[str, Any]] = {}
    storage: StorageConfig = StorageConfig()
    gates: GatesConfig = GatesConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("candidates")
    @classmethod
    def _candidate_names(cls, value: dict[str, CandidateConfig]) -> dict[str, CandidateConfig]:
        for name in value:
            if name in RESERVED_TARGETS:
                raise ValueError(f"candidate name {name!r} is reserved")
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(f"candidate name {name!r} must match [A-Za-z0-9_.-]{{1,64}}")
        return value

    @field_validator("scorers")
    @classmethod
    def _scorer_tables(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, table in value.items():
            if not isinstance(table.get("type"), str):
                raise ValueError(f"scorer {name!r} needs a 'type'")
        return value

    def pricing(self, target: str) -> Pricing:
        if target in ("primary", "secondary"):
            return self.primary
        return self.candidates[target]


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
    quiet = secret or isinstance(got, dict | list) or "got" in message
    return f"config error: {key}: {message}{'' if quiet else f' (got {got!r})'}"


def parse_config(raw: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    resolved = substitute_env(raw, dict(os.environ) if environ is None else environ)
    try:
        return Config.model_validate(resolved)
    except ValidationError as error:
        raise ConfigError(describe(error)) from None


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"config error: cannot read {path}: {error.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config error: {path} is not valid TOML: {error}") from None
    return parse_config(raw, environ)


def masked(config: Config) -> dict[str, Any]:
    """The resolved config as plain data with every secret shown as '***'."""
    return config.model_dump(mode="json")  # SecretStr dumps as '**********'
