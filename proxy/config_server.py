"""`[server]` (listeners, limits, the admin API) and `[storage]` (the DuckDB recorder)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from shadowtap.config_base import (
    HostPort,
    PositiveSeconds,
    Strict,
    is_loopback,
    split_host_port,
)

MIN_ADMIN_TOKEN_CHARS = 16
MIN_TEXT_BYTES = 1024  # storage.max_text_bytes: room for the truncation marker and some text


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


class StorageConfig(Strict):
    path: str = "shadowtap.duckdb"
    queue_max: Annotated[int, Field(gt=0)] = 10_000
    flush_interval_ms: Annotated[int, Field(gt=0)] = 500
    batch_size: Annotated[int, Field(gt=0)] = 2_000
    # A batch also ends at this many bytes of text: the writer's copies of a batch (rows,
    # Arrow, DuckDB) are a few times its size, so 1 MB prompts must not make 2,000-row batches.
    batch_max_bytes: Annotated[int, Field(gt=0)] = 8 * 1024 * 1024
    # DuckDB's buffer pool (its cache and the rows since the last checkpoint); its own default
    # is 80% of the host's RAM. The writer also reopens the file every RECYCLE_BYTES written
    # (see recorder/store.py), which gives back what DuckDB keeps for a connection.
    memory_limit: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)? ?(KB|MB|GB|KiB|MiB|GiB)$")] = (
        "256MB"
    )
    bodies: Literal["full", "redacted", "none"] = "redacted"
    # Each free-text field (request body, answer, tool arguments, error, score detail) is
    # stored up to this many UTF-8 bytes, then cut and marked (see recorder/caps.py): DuckDB
    # cannot bound its memory with texts past ~256 KiB. 0 = unlimited.
    max_text_bytes: Annotated[int, Field(ge=0)] = 128 * 1024
    # The final flush at stop: after this the writer is interrupted and what it had not written
    # is counted as dropped, so a stop ends within the grace + this (+ 1 s to unwind).
    close_timeout_s: PositiveSeconds = 5.0
    parquet_dir: str | None = None
    retention_days: Annotated[int, Field(gt=0)] | None = None
    enabled: bool = True

    @field_validator("max_text_bytes")
    @classmethod
    def _room_for_the_marker(cls, value: int) -> int:
        if 0 < value < MIN_TEXT_BYTES:
            raise ValueError(f"must be 0 (unlimited) or at least {MIN_TEXT_BYTES}")
        return value
