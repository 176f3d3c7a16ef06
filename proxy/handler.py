"""The proxy's one request handler: a thin sequence of the data path's stages.

receive → decide_sampling → fan_out_shadows (background) → forward_primary → (background)
complete the exchange once every target has answered, and hand it to the pipeline.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from shadowtap.answer import AnswerReader
from shadowtap.bounds import Admission, ShadowBounds
from shadowtap.completion import Completion
from shadowtap.exchange import Exchange, TargetResult
from shadowtap.forward import forward_primary
from shadowtap.headers import (
    error_response,
    header_credentials,
    slice_header_values,
    stored_header_names,
)
from shadowtap.ids import uuid7
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.pipeline import ExchangePipeline
from shadowtap.pricing import Prices
from shadowtap.sampling import (
    UNSAMPLED_ROUTE,
    Draws,
    SamplingDecision,
    SamplingPolicy,
    ShadowBudget,
    decide_sampling,
    match_route,
    parse_request,
    shed_for_memory,
)
from shadowtap.shadow import ShadowBodies, ShadowTarget, UnencodableBody, call_shadow
from shadowtap.tasks import TaskSet
from shadowtap.urls import origin_form, query_credentials, shadow_target

log = get_logger("shadowtap.proxy")
NOT_ELIGIBLE = SamplingDecision(False, "not_eligible")


class BodyTooLarge(Exception):
    pass


async def receive(request: web.Request, max_bytes: int) -> bytes:
    """Read the body once, refusing more than `max_bytes` before buffering it."""
    if request.content_length is not None:
        if request.content_length > max_bytes:
            raise BodyTooLarge
        if request.content_length == 0:  # body-less POSTs (the SDK's cancel calls) send this
            return b""
        try:
            return await request.content.readexactly(request.content_length)
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("client sent less than its Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


MODEL_TEXT_CHARS = 200


def requested_model(request_json: dict[str, Any] | None) -> str | None:
    """The request's `model` as text: a non-string one (a number, a list) is kept as its JSON."""
    model = (request_json or {}).get("model")
    if model is None or isinstance(model, str):
        return model
    try:
        return orjson.dumps(model).decode()[:MODEL_TEXT_CHARS]
    except orjson.JSONEncodeError:  # nested past orjson's depth limit
        return f"<{type(model).__name__}>"


@dataclass
class ProxyHandler:
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
            return error_response(
                413,
                f"request body exceeds server.max_body_bytes ({self.max_body_bytes} bytes)",
                "request_too_large",
                "invalid_request_error",
            )
        route = match_route(request.path, self.policy.routes) if request.method == "POST" else None
        capture: AnswerReader | None = None
        primary_done: asyncio.Future[AnswerReader] | None = None
        decision = NOT_ELIGIBLE
        admission: Admission | None = None
        try:
            decision, request_json, admission = self._decide(request, route, body)
            if decision.sampled and admission is not None:
                capture = self.bounds.reader("primary", admission.hold)
                primary_done = asyncio.get_running_loop().create_future()
                self._fan_out_shadows(
                    request,
                    path_qs,
                    route or "",
                    body,
                    request_json,
                    decision,
                    primary_done,
                    admission,
                )
        except Exception:  # shadowing is best effort: its bugs must never fail the primary
            log.exception("shadowing_failed", path=request.path)
            capture = primary_done = None
            if admission is not None:
                admission.hold.close()
        request_json = None  # parsed to decide: never held while the primary answers

        status: int | None = None
        try:
            response, status = await forward_primary(
                request,
                body,
                self.primary_session,
                self.primary_url + path_qs,
                self.primary_timeout,
                capture,
            )
            return response
        finally:
            latency = time.perf_counter() - started
            self.metrics.observe_response(
                route or UNSAMPLED_ROUTE,
                "primary",
                "primary",
                status,
                latency,
                None,  # a sampled answer's is known once its side copy is parsed (_complete)
            )
            if capture is not None and primary_done is not None:
                capture.finish()
                primary_done.set_result(capture)  # normalized later, off the primary path
            log.debug(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                latency_ms=round(latency * 1000, 2),
                sampled=decision.sampled,
            )

    # -- decide_sampling --------------------------------------------------------------------------
    def _decide(
        self, request: web.Request, route: str | None, body: bytes
    ) -> tuple[SamplingDecision, dict[str, Any] | None, Admission | None]:
        if route is None:
            return NOT_ELIGIBLE, None, None
        too_large = len(body) > self.policy.max_body_bytes  # not even parsed
        request_json, values = (None, None) if too_large else parse_request(body)
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
            copies = len({self.targets[name].model for name in decision.targets} - {None})
            admission = self.bounds.admit(body, values, copies)
            if admission is None:
                decision = shed_for_memory(decision)
        self.metrics.observe_sampling(route, decision.reason)
        for target in decision.shed:
            self.metrics.shadow_shed(target)
        if decision.shed:
            self.bounds.log_shed(route, decision)
        return decision, request_json, admission

    # -- fan_out_shadows --------------------------------------------------------------------------
    def _fan_out_shadows(
        self,
        request: web.Request,
        path_qs: str,
        route: str,
        body: bytes,
        request_json: dict[str, Any] | None,
        decision: SamplingDecision,
        primary_done: asyncio.Future[AnswerReader],
        admission: Admission,
    ) -> None:
        request_id = uuid7()
        exchange = Exchange(
            request_id=request_id,
            started_at=datetime.now(UTC),
            method=request.method,
            path=request.path,
            route=route,
            model=requested_model(request_json),
            stream=request_json.get("stream") is True if request_json else False,
            request_body=body,
            request_json=None,  # parsed again for the scorers only (ExchangePipeline)
            header_names=stored_header_names(request.headers.keys()),
            slice_headers=slice_header_values(request.headers, self.slice_headers),
            credentials=self._credentials(request, path_qs),
        )
        rewrites = any(self.targets[name].model for name in decision.targets)
        bodies = ShadowBodies(body, request_json if rewrites else None)
        tasks = []
        self.budget.acquire(len(decision.targets))
        for name in decision.targets:
            target = self.targets[name]
            coro = self._shadow(exchange, target, request, path_qs, bodies, admission)
            tasks.append(self.shadow_tasks.spawn(coro, name=f"shadow:{name}:{request_id}"))
        completing = self.exchange_tasks.spawn(
            self._complete(exchange, primary_done, tasks, admission), name=f"exchange:{request_id}"
        )
        completing.add_done_callback(admission.release_unless_handed_over)

    def _credentials(self, request: web.Request, path_qs: str) -> tuple[str, ...]:
        """Every secret this exchange's stored text must never show: the client's own (its
        auth headers and credential-named query values) and the targets' configured keys."""
        carried = header_credentials(request.headers) + query_credentials(path_qs.partition("?")[2])
        return (*dict.fromkeys(carried), *self.target_secrets)

    async def _shadow(
        self,
        exchange: Exchange,
        target: ShadowTarget,
        request: web.Request,
        path_qs: str,
        bodies: ShadowBodies,
        admission: Admission,
    ) -> None:
        self.metrics.shadow_started(target.name)
        completion = Completion(error="shadow did not run")
        outcome = "error"
        reader = self.bounds.reader(target.name, admission.hold)
        try:
            completion, outcome = await call_shadow(
                self.shadow_session,
                target,
                request.method,
                shadow_target(path_qs, target.forward_query),
                bodies.for_model(target.model),
                request.headers,
                reader,
            )
        except UnencodableBody as error:
            completion, outcome = Completion(error=f"not sent: {error}"), "skipped"
        except asyncio.CancelledError:
            completion = Completion(error="cancelled at shutdown")
            raise
        except Exception as error:  # a bug here must not escape into the event loop unseen
            log.exception("shadow_internal_error", target=target.name)
            completion = Completion(error=f"internal error: {type(error).__name__}")
        finally:
            self.budget.release()
            self.bounds.observe(reader)
            cost = target.prices.cost_usd(completion.prompt_tokens, completion.completion_tokens)
            exchange.results[target.name] = TargetResult(target.name, target.role, completion, cost)
            self.metrics.shadow_finished(target.name, outcome)
            self.metrics.observe_response(
                exchange.route,
                target.name,
                target.role,
                completion.status,
                completion.latency_s,
                completion.ttft_s,
            )
            self.metrics.observe_usage(
                target.name, completion.prompt_tokens, completion.completion_tokens
            )
            log.info(
                "shadow",
                request_id=exchange.request_id,
                target=target.name,
                role=target.role,
                outcome=outcome,
                status=completion.status,
                # Not the message: upstream errors quote the request, and the rejected key.
                failed=completion.error is not None,
                latency_ms=round((completion.latency_s or 0) * 1000, 2),
            )

    async def _complete(
        self,
        exchange: Exchange,
        primary_done: asyncio.Future[AnswerReader],
        shadows: list[asyncio.Task[None]],
        admission: Admission,
    ) -> None:
        capture = await primary_done
        try:
            primary = await capture.completion()  # parsed within the primary's pace
        except asyncio.CancelledError:  # shutdown: the exchange is still recorded, unparsed
            capture.abandon()
            exchange.results["primary"] = TargetResult(
                "primary", "primary", Completion(status=capture.status, error="cancelled")
            )
            admission.hand_over(exchange)
            self.pipeline.record(exchange)
            raise
        except Exception as error:  # a normalizer bug loses this pair's text, nothing else
            log.exception("normalize_failed", request_id=exchange.request_id)
            primary = Completion(status=capture.status, error=f"internal error: {error!r}"[:300])
        self.bounds.observe(capture)
        self.metrics.observe_ttft(exchange.route, "primary", "primary", primary.ttft_s)
        cost = self.primary_prices.cost_usd(primary.prompt_tokens, primary.completion_tokens)
        exchange.results["primary"] = TargetResult("primary", "primary", primary, cost)
        self.metrics.observe_usage("primary", primary.prompt_tokens, primary.completion_tokens)
        await asyncio.gather(*shadows, return_exceptions=True)
        admission.hand_over(exchange)
        await self.pipeline.finish(exchange, admission.transient)
