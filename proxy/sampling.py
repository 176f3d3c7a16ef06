"""Which requests are mirrored, and to which shadow targets.

`decide_sampling` is pure: it sees the route, the draws (numbers in [0, 1) that come from a
sticky key's hash or from a random generator) and how much shadow budget is free, and returns a
decision. The stateful parts — drawing numbers and holding the budget — live beside it in small
classes, so the policy itself is trivially testable.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy

UNSAMPLED_ROUTE = "other"  # the metrics label for every path outside `sampling.routes`


@dataclass(frozen=True, slots=True)
class SamplingPolicy:
    rate: float
    routes: frozenset[str]
    target_rates: Mapping[str, float]  # shadow target -> share of sampled requests it receives


@dataclass(frozen=True, slots=True)
class SamplingDecision:
    sampled: bool
    reason: str  # "not_eligible" | "invalid_json" | "not_sampled" | "sampled" | "shed"
    targets: tuple[str, ...] = ()  # shadows to send
    shed: tuple[str, ...] = ()  # shadows chosen by rate but over budget: counted, never sent


def match_route(path: str, routes: frozenset[str]) -> str | None:
    return path if path in routes else None


def decide_sampling(
    route: str | None,
    request_json_ok: bool,
    draws: Mapping[str, float],
    policy: SamplingPolicy,
    budget_free: int,
) -> SamplingDecision:
    """Decide for one request. `draws[""]` decides the request, `draws[target]` each target."""
    if route is None:
        return SamplingDecision(False, "not_eligible")
    if not request_json_ok:
        # The primary will answer with its own error; a shadow of a broken request teaches nothing.
        return SamplingDecision(False, "invalid_json")
    if draws[""] >= policy.rate:
        return SamplingDecision(False, "not_sampled")
    chosen = [t for t, rate in policy.target_rates.items() if draws[t] < rate]
    targets, shed = tuple(chosen[:budget_free]), tuple(chosen[budget_free:])
    if not targets and shed:
        return SamplingDecision(False, "shed", (), shed)
    return SamplingDecision(True, "sampled", targets, shed)


def _unit_hash(text: str) -> float:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Draws:
    """Numbers in [0, 1) for `decide_sampling`: sticky when `sampling.key` names a value."""

    def __init__(self, key: str | None, targets: list[str], rng: random.Random | None = None):
        self._kind, _, self._name = (key or "").partition(":")
        self._targets = targets
        self._rng = rng or random.Random()

    def sticky_value(
        self, headers: CIMultiDictProxy[str], body: dict[str, Any] | None
    ) -> str | None:
        if self._kind == "header":
            return headers.get(self._name)
        if self._kind == "body" and isinstance(body, dict):
            value = body.get(self._name)
            return None if value is None else str(value)
        return None

    def draw(self, sticky: str | None) -> dict[str, float]:
        if sticky is None:  # no key configured, or the request lacks it: random per request
            return {name: self._rng.random() for name in ["", *self._targets]}
        # Salting by target keeps per-target choices independent yet sticky for the same key.
        return {name: _unit_hash(f"{name}\0{sticky}") for name in ["", *self._targets]}


class ShadowBudget:
    """At most `max_inflight` shadows at once and `max_per_second` started (0 = no limit)."""

    def __init__(
        self,
        max_inflight: int,
        max_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_inflight = max_inflight
        self.max_per_second = max_per_second
        self.inflight = 0
        self._clock = clock
        self._capacity = max(1.0, max_per_second)  # one second of burst
        self._tokens = self._capacity
        self._last = clock()

    def free(self) -> int:
        room = self.max_inflight - self.inflight if self.max_inflight else 1 << 30
        if self.max_per_second:
            now = self._clock()
            self._tokens = min(
                self._capacity, self._tokens + (now - self._last) * self.max_per_second
            )
            self._last = now
            room = min(room, int(self._tokens))
        return max(0, room)

    def acquire(self, count: int) -> None:
        self.inflight += count
        if self.max_per_second:
            self._tokens -= count

    def release(self) -> None:
        self.inflight -= 1
