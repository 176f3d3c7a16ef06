"""decide_sampling is pure: these tests need no server (nor does its stage, `Sampler`)."""

from __future__ import annotations

import random

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry
from shadowtap.bounds import ShadowBounds
from shadowtap.config import SamplingConfig, StickyKey
from shadowtap.ids import unit_hash
from shadowtap.metrics import Metrics
from shadowtap.sampling import (
    Draws,
    OncePerSecond,
    Sampler,
    SamplingPolicy,
    ShadowBudget,
    decide_sampling,
    parse_request,
    shed_for_memory,
)

POLICY = SamplingPolicy(
    rate=0.5, routes=frozenset({"/v1/chat/completions"}), target_rates={"a": 1.0, "b": 0.2}
)


def draws(request: float, a: float = 0.0, b: float = 0.0) -> dict[str, float]:
    return {"": request, "a": a, "b": b}


def test_route_rate_and_json_decide_in_that_order() -> None:
    assert decide_sampling(None, True, draws(0.0), POLICY, 10).reason == "not_eligible"
    assert decide_sampling("/v1/chat/completions", False, draws(0.0), POLICY, 10).reason == (
        "invalid_json"
    )
    # The draw comes before anything only a parse can tell: an unparsed body is not judged.
    assert decide_sampling("/v1/chat/completions", False, draws(0.5), POLICY, 10).reason == (
        "not_sampled"
    )
    assert not decide_sampling("/v1/chat/completions", True, draws(0.5), POLICY, 10).sampled
    decision = decide_sampling("/v1/chat/completions", True, draws(0.49, b=0.1), POLICY, 10)
    assert decision.sampled and decision.targets == ("a", "b")


def test_per_target_rate_picks_targets() -> None:
    decision = decide_sampling("/v1/chat/completions", True, draws(0.1, b=0.3), POLICY, 10)
    assert decision.targets == ("a",)


def test_budget_sheds_what_does_not_fit() -> None:
    decision = decide_sampling("/v1/chat/completions", True, draws(0.1, b=0.1), POLICY, 1)
    assert decision.sampled and decision.targets == ("a",) and decision.shed == ("b",)
    none_free = decide_sampling("/v1/chat/completions", True, draws(0.1, b=0.1), POLICY, 0)
    assert not none_free.sampled and none_free.reason == "shed" and none_free.shed == ("a", "b")


def test_sticky_draws_repeat_and_differ_by_target() -> None:
    sticky = Draws(StickyKey("body", "user"), ["a", "b"])
    headers = CIMultiDictProxy(CIMultiDict())
    assert sticky.sticky_value(headers, {"user": "u1"}) == "u1"
    assert sticky.draw("u1") == sticky.draw("u1")
    first = sticky.draw("u1")
    assert first[""] != first["a"] != first["b"]
    assert sticky.sticky_value(headers, {}) is None  # absent: falls back to random draws
    by_header = Draws(StickyKey("header", "X-User"), ["a"])
    header = CIMultiDictProxy(CIMultiDict({"x-user": "h1"}))
    assert by_header.sticky_value(header, None) == "h1"
    values = [Draws(None, [], random.Random(1)).draw(None)[""] for _ in range(3)]
    assert all(0 <= v < 1 for v in values)


def test_budget_limits_inflight_and_rate() -> None:
    now = [0.0]
    budget = ShadowBudget(max_inflight=3, max_per_second=2, clock=lambda: now[0])
    assert budget.free() == 2  # one second of burst at 2/s
    budget.acquire(2)
    assert budget.free() == 0
    now[0] += 0.5
    assert budget.free() == 1  # refilled one token; inflight room is 1
    budget.release()
    budget.release()
    now[0] += 10
    assert budget.free() == 2  # tokens cap at the burst size
    unlimited = ShadowBudget(max_inflight=0, max_per_second=0)
    unlimited.acquire(1000)
    assert unlimited.free() > 1000


def test_too_large_requests_are_never_sampled() -> None:
    policy = SamplingPolicy(
        rate=1.0, routes=POLICY.routes, target_rates={"a": 1.0}, max_body_bytes=1000
    )
    route = "/v1/chat/completions"
    assert decide_sampling(route, True, draws(0.0), policy, 10, body_bytes=1000).sampled
    over = decide_sampling(route, True, draws(0.0), policy, 10, body_bytes=1001)
    assert not over.sampled and over.reason == "too_large"
    complex_body = decide_sampling(route, False, draws(0.0), policy, 10, 10, body_values=50_001)
    assert complex_body.reason == "too_large"  # not "invalid_json": it is JSON, just too big


def test_targets_that_owe_their_read_budget_are_shed() -> None:
    route = "/v1/chat/completions"
    decision = decide_sampling(route, True, draws(0.1, b=0.1), POLICY, 10, owing=["a"])
    assert decision.sampled and decision.targets == ("b",) and decision.shed == ("a",)
    all_owe = decide_sampling(route, True, draws(0.1, b=0.1), POLICY, 10, owing=["a", "b"])
    assert not all_owe.sampled and all_owe.reason == "shed"
    memory = shed_for_memory(decision)
    assert not memory.sampled and memory.reason == "memory" and memory.shed == ("b", "a")


def test_request_parsing_counts_values_only_for_long_bodies() -> None:
    assert parse_request(b'{"a": [1, 2]}') == ({"a": [1, 2]}, None)
    assert parse_request(b"[1]") == (None, None)  # JSON, but not an object
    assert parse_request(b"{nope") == (None, None)
    flood = b'{"a": [' + b"0," * 60_000 + b"0]}"
    parsed, values = parse_request(flood)
    assert parsed is None and values is not None and values > 60_000


def test_shed_lines_are_logged_once_a_second_with_the_count_between() -> None:
    now = [0.0]
    gate = OncePerSecond(clock=lambda: now[0])
    assert gate.due() == 0
    assert gate.due() is None and gate.due() is None
    now[0] += 1.0
    assert gate.due() == 2


def test_a_policy_without_a_size_limit_samples_a_body_of_any_size() -> None:
    """0 means no limit in the request path's stage too (it called every body too large,
    never parsed it, and counted each "invalid_json")."""
    unlimited = SamplingPolicy(rate=1.0, routes=POLICY.routes, target_rates={"a": 1.0})
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    sampler = Sampler(
        unlimited,
        Draws(None, ["a"]),
        ShadowBudget(0, 0),
        ShadowBounds(SamplingConfig(), ["a"], metrics),
        lambda _route, _targets: 0,
        metrics,
    )
    route = "/v1/chat/completions"
    request = make_mocked_request("POST", route)
    sampled = sampler.decide_sampling(request, route, b'{"model": "m"}')
    assert sampled is not None and sampled.decision.targets == ("a",)
    labels = {"route": route, "outcome": "sampled"}
    assert registry.get_sample_value("shadowtap_sampling_decisions_total", labels) == 1
    sampled.admission.hold.close()


def test_a_request_is_decided_on_its_own_number_and_keeps_it() -> None:
    """An unsampled request costs one number; a chosen one keeps it beside its targets'. The
    sticky numbers are the hashes they always were: a key keeps its decisions across versions."""
    sticky = Draws(StickyKey("header", "X-User"), ["a", "b"])
    assert sticky.request("u1") == unit_hash("\0u1")
    assert sticky.draw("u1") == {
        "": unit_hash("\0u1"),
        "a": unit_hash("a\0u1"),
        "b": unit_hash("b\0u1"),
    }
    assert sticky.draw("u1", 0.25) == {"": 0.25, "a": unit_hash("a\0u1"), "b": unit_hash("b\0u1")}
    seeded, reference = Draws(None, ["a"], random.Random(7)), random.Random(7)
    first = seeded.request(None)
    assert first == reference.random()
    assert seeded.draw(None, first) == {"": first, "a": reference.random()}
    assert POLICY.chooses(POLICY.rate - 1e-9) and not POLICY.chooses(POLICY.rate)
