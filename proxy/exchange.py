"""`Exchange`: one sampled request with every target's answer — the unit later stages consume.

The proxy builds an `Exchange` per sampled request and, once the primary and every shadow have
finished (or failed, or timed out), hands it to the `ExchangePipeline`: scorers fill
`scores`, then the recorder stores it. Unsampled requests never become an `Exchange`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from shadowtap.completion import Completion

Role = Literal["primary", "secondary", "candidate"]


@dataclass(slots=True)
class TargetResult:
    target: str  # "primary", "secondary" or the candidate's name
    role: Role
    completion: Completion
    cost_usd: float | None = None  # from the target's configured per-1k-token prices
    source: str = "live"  # "replay" (or "replay-redacted") when `shadowtap replay` asked it
    replay_run: str | None = None


@dataclass(slots=True)
class Score:
    """A scorer's verdict on (primary, target): `score` in [0, 1] (1 = agreement), None when not
    applicable, or `error` set when the scorer raised. The three are never conflated."""

    target: str
    scorer: str
    score: float | None
    detail: dict[str, Any] | None = None
    error: str | None = None
    threshold: float | None = None  # the scorer's threshold, kept so reports need no config


@dataclass(slots=True)
class Exchange:
    request_id: str  # UUIDv7
    started_at: datetime  # UTC
    method: str
    path: str
    route: str  # the sampled route it matched (a bounded label)
    model: str | None  # the "model" the client asked for
    stream: bool
    request_body: bytes
    request_json: dict[str, Any] | None
    # The route's API, in which the primary's answer was read (`shadowtap.dialects`).
    dialect: str = "openai-chat"
    header_names: list[str] = field(default_factory=list)  # allow-listed names only, never values
    # Values of the headers `[report] slice_by` names (never credentials), for report slices.
    slice_headers: dict[str, str] = field(default_factory=dict)
    results: dict[str, TargetResult] = field(default_factory=dict)
    scores: list[Score] = field(default_factory=list)
    # The exact credential values the request carried (auth headers, query values): whatever
    # stores or logs this exchange's text redacts them, whatever their shape. Never stored.
    credentials: tuple[str, ...] = field(default=(), repr=False)
    # Bytes this exchange holds against the proxy's memory budget, and how to give them back.
    held_bytes: int = 0
    on_release: Callable[[int], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the held bytes back; called once by the last stage that holds the exchange
        (the recorder after writing or dropping it, the pipeline when nothing records)."""
        callback, self.on_release = self.on_release, None
        if callback is not None:
            callback(self.held_bytes)

    @property
    def primary(self) -> Completion | None:
        result = self.results.get("primary")
        return result.completion if result else None

    def shadows(self) -> list[TargetResult]:
        return [r for r in self.results.values() if r.role != "primary"]


class ExchangeSink(Protocol):
    """Where finished exchanges go. `record` must never block or raise into the proxy."""

    def record(self, exchange: Exchange) -> bool:
        """Queue the exchange; return False when it was dropped (and counted)."""
        ...
