"""What `shadowtap report` reads: `[gates]` (the swap decision's thresholds) and `[report]`
(what to slice traffic by besides the built-in dimensions)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator
from shadowtap.config_base import Rate, Strict


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
