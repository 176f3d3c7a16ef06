"""Which requests are mirrored, and to which shadow targets.

`decide_sampling` is pure: it sees the route, the draws (numbers in [0, 1) that come from a
sticky key's hash or from a random generator) and how much shadow budget is free, and returns a
decision. The stateful parts — drawing numbers and holding the budget — live beside it in small
classes, so the policy itself is trivially testable. `Sampler.decide_sampling` is the request
path's stage around it: it draws, parses the body only for a request the draw chose (or whose
sticky key is in the body), decides, admits the request's bytes into the memory budget and
counts the decision. Most requests are not drawn: they cost a random number, never a parse.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from multidict import CIMultiDictProxy
from shadowtap.config_sampling import StickyKey
from shadowtap.ids import unit_hash
from shadowtap.metrics import Metrics
from shadowtap.normalize import COUNT_FROM, MAX_JSON_VALUES, json_values_bound, too_many_values

if TYPE_CHECKING:  # bounds imports this module's decision type
    from aiohttp import web
    from shadowtap.bounds import Admission, ShadowBounds

UNSAMPLED_ROUTE = "other"  # the metrics label for every path outside `sampling.routes`


@dataclass(frozen=True, slots=True)
class SamplingPolicy:
    rate: float
    routes: frozenset[str]
    target_rates: Mapping[str, float]  # shadow target -> share of sampled requests it receives
    max_body_bytes: int = 0  # larger requests are never sampled (0 = no limit)

    def too_large(self, body_bytes: int) -> bool:
        return bool(self.max_body_bytes) and body_bytes > self.max_body_bytes

    def chooses(self, request_draw: float) -> bool:
        """True when a request's own draw (`draws[""]`) chooses it for shadowing."""
        return request_draw < self.rate


@dataclass(frozen=True, slots=True)
class SamplingDecision:
    sampled: bool
    # "not_eligible" | "too_large" | "invalid_json" | "not_sampled" | "sampled" | "shed" |
    # "memory" (the byte budget had no room: see `shed_for_memory`)
    reason: str
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
    body_bytes: int = 0,
    body_values: int | None = None,
    owing: Collection[str] = (),
) -> SamplingDecision:
    """Decide for one request. `draws[""]` decides the request, `draws[target]` each target.

    In this order: the route; the body's size in bytes; the draw (`drawn`); then what only a
    parse tells — more JSON values than the event loop parses (`body_values`, counted for
    long bodies only: too large), not a JSON object (invalid). A request the draw did not
    choose is "not_sampled" whatever its body, so the request path need not parse it.
    `owing`: targets that overspent their read budget (bytes per second or loop share); they
    are shed like targets over the count budget, so a flooding target gets fewer shadows.
    """
    if route is None:
        return SamplingDecision(False, "not_eligible")
    if policy.too_large(body_bytes):
        return SamplingDecision(False, "too_large")
    if not drawn(draws, policy):
        return SamplingDecision(False, "not_sampled")
    if body_values is not None and body_values > MAX_JSON_VALUES:
        return SamplingDecision(False, "too_large")
    if not request_json_ok:
        # The primary will answer with its own error; a shadow of a broken request teaches nothing.
        return SamplingDecision(False, "invalid_json")
    chosen = [t for t, rate in policy.target_rates.items() if draws[t] < rate]
    ready = [t for t in chosen if t not in owing]
    targets = tuple(ready[:budget_free])
    shed = tuple(t for t in chosen if t not in targets)
    if not targets and shed:
        return SamplingDecision(False, "shed", (), shed)
    return SamplingDecision(True, "sampled", targets, shed)


def drawn(draws: Mapping[str, float], policy: SamplingPolicy) -> bool:
    """True when the request's draw chose it for shadowing (before any per-target draw)."""
    return policy.chooses(draws[""])


def shed_for_memory(decision: SamplingDecision) -> SamplingDecision:
    """A sampled decision whose request did not fit in the memory budget: every target shed."""
    return SamplingDecision(False, "memory", (), decision.targets + decision.shed)


def parse_request(body: bytes) -> tuple[dict[str, Any] | None, int | None]:
    """The request body as a JSON object (None when it is not one, or has more values than
    the event loop parses), and the bound on its JSON values when it had to be counted."""
    values = json_values_bound(body) if len(body) >= COUNT_FROM else None
    if too_many_values(body, values):
        return None, values
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, values
    return (parsed if isinstance(parsed, dict) else None), values


class OncePerSecond:
    """For log lines about shedding: at most one a second, saying how many were not logged."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next = 0.0
        self._quiet = 0

    def due(self) -> int | None:
        """None: stay quiet; otherwise log now, with this many events since the last line."""
        now = self._clock()
        if now < self._next:
            self._quiet += 1
            return None
        self._next = now + 1.0
        quiet, self._quiet = self._quiet, 0
        return quiet


class Draws:
    """Numbers in [0, 1) for `decide_sampling`: sticky when `sampling.key` names a value."""

    def __init__(
        self, key: StickyKey | None, targets: list[str], rng: random.Random | None = None
    ) -> None:
        self._key = key
        self._targets = targets
        self._rng = rng or random.Random()

    @property
    def reads_body(self) -> bool:
        """True when the sticky value is a body field: the body is parsed before drawing."""
        return self._key is not None and self._key.source == "body"

    def sticky_value(
        self, headers: CIMultiDictProxy[str], body: dict[str, Any] | None
    ) -> str | None:
        key = self._key
        if key is None:
            return None
        if key.source == "header":
            return headers.get(key.name)
        if isinstance(body, dict):
            value = body.get(key.name)
            return None if value is None else str(value)
        return None

    def request(self, sticky: str | None) -> float:
        """The request's own number (`draws[""]`): alone, it decides most requests (unsampled),
        so the targets' numbers are drawn only for a request it chose (`draw`)."""
        if sticky is None:  # no key configured, or the request lacks it: random per request
            return self._rng.random()
        return unit_hash(f"\0{sticky}")

    def draw(self, sticky: str | None, request: float | None = None) -> dict[str, float]:
        """Every number `decide_sampling` reads: the request's (`request`, when drawn
        already) and each target's."""
        draws = {"": self.request(sticky) if request is None else request}
        if sticky is None:
            draws.update((name, self._rng.random()) for name in self._targets)
        else:
            # Salting by target keeps per-target choices independent yet sticky for the key.
            draws.update((name, unit_hash(f"{name}\0{sticky}")) for name in self._targets)
        return draws


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


@dataclass(slots=True)
class Sampled:
    """A request chosen for shadowing, as `fan_out_shadows` takes it."""

    route: str
    decision: SamplingDecision
    # Parsed to decide. `Shadowing.fan_out_shadows` takes what the exchange needs of it
    # (`model`, `stream`) and keeps it only for a target that reads it (a translation).
    request_json: dict[str, Any] | None
    admission: Admission  # its bytes, held against the memory budget
    model: str | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Sampler:
    """The sampling stage: everything `decide_sampling` needs, gathered for one request."""

    policy: SamplingPolicy
    draws: Draws
    budget: ShadowBudget
    bounds: ShadowBounds
    # The bodies copied from a request on a route for these targets (see request_hold_bytes).
    copies: Callable[[str, tuple[str, ...]], int]
    metrics: Metrics

    def route(self, request: web.Request) -> str | None:
        """The sampled route a request is on; None: it is only forwarded (not a `POST` on
        `sampling.routes`)."""
        return match_route(request.path, self.policy.routes) if request.method == "POST" else None

    def decide_sampling(self, request: web.Request, route: str, body: bytes) -> Sampled | None:
        """Draw, parse, decide, admit the bytes and count the decision; None: not sampled."""
        too_large = self.policy.too_large(len(body))  # not even parsed
        draws = None
        if not too_large and not self.draws.reads_body:
            # A random (or header-keyed) draw needs no body: most requests end here, unparsed,
            # on one number (the targets' are drawn for a chosen request only).
            sticky = self.draws.sticky_value(request.headers, None)
            chosen = self.draws.request(sticky)
            if not self.policy.chooses(chosen):
                self.metrics.observe_sampling(route, "not_sampled")
                return None
            draws = self.draws.draw(sticky, chosen)
        request_json, values = (None, None) if too_large else parse_request(body)
        if draws is None:
            draws = self.draws.draw(self.draws.sticky_value(request.headers, request_json))
        decision = decide_sampling(
            route,
            request_json is not None,
            draws,
            self.policy,
            self.budget.free(),
            len(body),
            values,
            self.bounds.owing(),
        )
        admission = None
        if decision.sampled:
            copies = self.copies(route, decision.targets)
            admission = self.bounds.admit(body, values, copies)
            if admission is None:
                decision = shed_for_memory(decision)
        self.metrics.observe_sampling(route, decision.reason)
        for target in decision.shed:
            self.metrics.shadow_shed(target)
        if decision.shed:
            self.bounds.log_shed(route, decision)
        if admission is None or request_json is None:
            return None
        return Sampled(route, decision, request_json, admission)
