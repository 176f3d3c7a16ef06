"""The proxy's one request handler: the data path's stages, called in order.

receive → decide_sampling → fan_out_shadows (background) / forward_primary → (background, once
every target has answered) complete_exchange: normalize → score → record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from shadowtap.bounds import ShadowBounds
from shadowtap.forward import forward_primary
from shadowtap.headers import error_response
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.pipeline import ExchangeCompletion, ExchangePipeline, PrimaryCopy
from shadowtap.pricing import Prices
from shadowtap.receive import BodyTooLarge, ExpectationFailed, receive
from shadowtap.sampling import UNSAMPLED_ROUTE, Draws, Sampler, SamplingPolicy, ShadowBudget
from shadowtap.shadow import Shadowing, ShadowTarget
from shadowtap.shadow_request import translated_bodies
from shadowtap.tasks import TaskSet
from shadowtap.upstream import UpstreamPool
from shadowtap.urls import origin_form

log = get_logger("shadowtap.proxy")


@dataclass
class ProxyHandler:
    """Built by the server from its long-lived parts; assembles the stages from them."""

    primary_url: str
    primary_timeout: aiohttp.ClientTimeout
    max_body_bytes: int
    primary_session: aiohttp.ClientSession
    shadow_session: aiohttp.ClientSession
    metrics: Metrics
    pipeline: ExchangePipeline
    policy: SamplingPolicy
    draws: Draws
    budget: ShadowBudget
    targets: dict[str, ShadowTarget]
    shadow_tasks: TaskSet
    exchange_tasks: TaskSet
    primary_prices: Prices
    bounds: ShadowBounds
    target_secrets: tuple[str, ...] = ()  # configured keys of the shadow targets
    slice_headers: tuple[str, ...] = ()  # [report] slice_by headers whose values are stored
    route_dialects: dict[str, str] = field(default_factory=dict)  # sampled route -> its API
    primary_pool: UpstreamPool | None = None  # relays what it handles, below aiohttp's client
    shadow_pools: dict[str, UpstreamPool] = field(default_factory=dict)  # per target name

    def __post_init__(self) -> None:
        # Asked once (the level is set before the server starts): the per-request debug line
        # then costs nothing when it is filtered out, not a logger lookup and its arguments.
        self.log_requests = log.is_enabled_for(logging.DEBUG)
        self.sampler = Sampler(
            self.policy, self.draws, self.budget, self.bounds, self.translations, self.metrics
        )
        completion = ExchangeCompletion(
            self.pipeline, self.bounds, self.metrics, self.primary_prices
        )
        self.shadowing = Shadowing(
            session=self.shadow_session,
            targets=self.targets,
            budget=self.budget,
            bounds=self.bounds,
            metrics=self.metrics,
            shadow_tasks=self.shadow_tasks,
            exchange_tasks=self.exchange_tasks,
            completion=completion,
            target_secrets=self.target_secrets,
            slice_headers=self.slice_headers,
            route_dialects=self.route_dialects,
            pools=self.shadow_pools,
        )

    def translations(self, route: str, names: tuple[str, ...]) -> int:
        """How many bodies a request on `route` is translated into for these targets: the
        copies its admission is charged for (a model alone is replaced in the client's bytes)."""
        targets = [self.targets[name] for name in names]
        return translated_bodies(targets, self.route_dialects.get(route))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        path_qs = origin_form(request.raw_path)
        if path_qs is None:
            return error_response(
                400, "request target must be a path", "invalid_request_target", "proxy_error"
            )
        try:
            body = await receive(request, self.max_body_bytes)
        except BodyTooLarge:
            message = f"request body exceeds server.max_body_bytes ({self.max_body_bytes} bytes)"
            return error_response(413, message, "request_too_large", "invalid_request_error")
        except ExpectationFailed:
            message = "only the expectation 100-continue is supported"
            return error_response(417, message, "expectation_failed", "invalid_request_error")
        route = self.sampler.route(request)
        sampled = None
        primary: PrimaryCopy | None = None  # the primary's side copy, when sampled
        try:  # shadowing is best effort: its bugs must never fail the primary
            if route is not None:
                sampled = self.sampler.decide_sampling(request, route, body)
            if sampled is not None:
                primary = self.shadowing.fan_out_shadows(request, path_qs, body, sampled)
        except Exception:
            log.exception("shadowing_failed", path=request.path)
            primary = None
            if sampled is not None:
                sampled.admission.hold.close()
        was_sampled, sampled = sampled is not None, None  # its parsed request is not held on

        status: int | None = None
        try:
            response, status = await forward_primary(
                request,
                body,
                self.primary_session,
                self.primary_url + path_qs,
                self.primary_timeout,
                primary.reader if primary is not None else None,
                self.primary_pool,
                path_qs,
            )
            return response
        finally:
            latency = time.perf_counter() - started
            # A sampled answer's time to first token is known once its copy is parsed.
            self.metrics.observe_response(
                route or UNSAMPLED_ROUTE, "primary", "primary", status, latency, None
            )
            if primary is not None:
                primary.relayed()  # normalized later, off the primary path (complete_exchange)
            if self.log_requests:
                log.debug(
                    "request",
                    method=request.method,
                    path=request.path,
                    status=status,
                    latency_ms=round(latency * 1000, 2),
                    sampled=was_sampled,
                )
