"""Shadow targets (candidates and the secondary), and the stage that mirrors a request to them.

`Shadowing.fan_out_shadows` opens the sampled request's `Exchange` and starts one task per
target (`run_shadow`: the call and its bookkeeping) and the exchange's own task, which completes
it once every target has answered (`pipeline.ExchangeCompletion.complete_exchange`).
A shadow never raises: whatever the target does — hang, 500, reset, garbage — becomes a
`Completion` with `error` set and an outcome label, and the client never notices.

Where a target sees the request: `ShadowBodies.for_model` makes its body, `call_shadow` its
path and headers; its answer is read by an `AnswerReader`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDictProxy
from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import Pace
from shadowtap.completion import Completion
from shadowtap.config import Config, SamplingConfig
from shadowtap.exchange import Exchange, Role, TargetResult
from shadowtap.headers import (
    header_credentials,
    shadow_request_headers,
    slice_header_values,
    stored_header_names,
)
from shadowtap.ids import uuid7
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.pipeline import ExchangeCompletion, PrimaryCopy
from shadowtap.pricing import Prices
from shadowtap.tasks import TaskSet
from shadowtap.urls import query_credentials, shadow_target

if TYPE_CHECKING:
    from shadowtap.bounds import Admission, ShadowBounds
    from shadowtap.sampling import Sampled, ShadowBudget

log = get_logger("shadowtap.proxy")
DEFAULT_ANSWER_BYTES = SamplingConfig().max_answer_bytes
MODEL_TEXT_CHARS = 200


@dataclass(frozen=True, slots=True)
class ShadowTarget:
    name: str
    role: Role
    url: str
    timeout_s: float
    rate: float
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    forward_client_auth: bool = False
    prices: Prices = field(default_factory=Prices)
    forward_query: frozenset[str] = frozenset()  # client query parameters this target gets

    def secrets(self) -> tuple[str, ...]:
        """The configured values that authenticate us with this target."""
        return tuple(v for v in (self.api_key, *self.headers.values()) if v)


def shadow_targets(config: Config) -> list[ShadowTarget]:
    """The secondary (when its rate is above 0) and every candidate, in config order."""
    targets = []
    secondary = config.secondary
    if secondary.rate > 0:
        targets.append(
            ShadowTarget(
                name="secondary",
                role="secondary",
                url=config.primary.url,
                timeout_s=secondary.timeout_s,
                rate=secondary.rate,
                api_key=secondary.api_key.get_secret_value() if secondary.api_key else None,
                headers={k: v.get_secret_value() for k, v in secondary.headers.items()},
                forward_client_auth=secondary.forward_client_auth,
                prices=Prices.of(config.primary),
                forward_query=frozenset(secondary.forward_query),
            )
        )
    for name, candidate in config.candidates.items():
        targets.append(
            ShadowTarget(
                name=name,
                role="candidate",
                url=candidate.url,
                timeout_s=candidate.timeout_s,
                rate=candidate.rate,
                model=candidate.model,
                api_key=candidate.api_key.get_secret_value() if candidate.api_key else None,
                headers={k: v.get_secret_value() for k, v in candidate.headers.items()},
                forward_client_auth=candidate.forward_client_auth,
                prices=Prices.of(candidate),
                forward_query=frozenset(candidate.forward_query),
            )
        )
    return targets


class UnencodableBody(ValueError):
    """The request cannot be re-encoded for a target (e.g. nested past orjson's depth limit)."""


class ShadowBodies:
    """The request as each target should get it: `model` replaced when the target sets one.

    Built inside each shadow's task (never on the primary's path), once per distinct model.
    """

    def __init__(self, body: bytes, request_json: dict[str, Any] | None) -> None:
        self.body = body
        self.request_json = request_json
        self._rewritten: dict[str, bytes] = {}

    def for_model(self, model: str | None) -> bytes:
        if model is None or self.request_json is None:
            return self.body
        if model not in self._rewritten:
            try:
                self._rewritten[model] = orjson.dumps({**self.request_json, "model": model})
            except orjson.JSONEncodeError as error:
                raise UnencodableBody(f"the request cannot be re-encoded ({error})") from None
        return self._rewritten[model]


async def call_shadow(
    session: aiohttp.ClientSession,
    target: ShadowTarget,
    method: str,
    path_qs: str,
    body: bytes,
    client_headers: CIMultiDictProxy[str],
    reader: AnswerReader | None = None,
) -> tuple[Completion, str]:
    """Send one shadow request; return its `Completion` and outcome (ok, error, timeout).

    The answer is read by `reader`, within its cap and its target's pace (the proxy's; by
    default the answer cap alone, for callers off the primary's path such as replay);
    `timeout_s` bounds the whole call, waits for the pace included.
    """
    if reader is None:
        reader = AnswerReader(target.name, Pace(0, 0, 0), AnswerLimits(DEFAULT_ANSWER_BYTES))
    headers = shadow_request_headers(
        client_headers, target.api_key, target.headers, target.forward_client_auth
    )
    headers["Accept-Encoding"] = "gzip, deflate"  # what the reader decodes, a slice at a time
    reader.started = started = time.perf_counter()
    try:
        async with asyncio.timeout(target.timeout_s):
            async with session.request(
                method,
                target.url + path_qs,
                data=body,
                headers=headers,
                allow_redirects=False,
                auto_decompress=False,
            ) as response:
                await reader.read(response)
            completion = await reader.completion()
    except TimeoutError:
        reader.abandon()
        return Completion(
            error=f"timed out after {target.timeout_s:g}s", latency_s=time.perf_counter() - started
        ), "timeout"
    except (aiohttp.ClientError, OSError) as error:
        reader.abandon()
        message = f"{type(error).__name__}: {error}"[:300]
        return Completion(error=message, latency_s=time.perf_counter() - started), "error"
    except BaseException:
        reader.abandon()
        raise
    return completion, "ok" if completion.ok else "error"


def requested_model(request_json: dict[str, Any] | None) -> str | None:
    """The request's `model` as text: a non-string one (a number, a list) is kept as its JSON."""
    model = (request_json or {}).get("model")
    if model is None or isinstance(model, str):
        return model
    try:
        return orjson.dumps(model).decode()[:MODEL_TEXT_CHARS]
    except orjson.JSONEncodeError:  # nested past orjson's depth limit
        return f"<{type(model).__name__}>"


@dataclass(frozen=True, slots=True)
class Shadowing:
    """The fan-out stage: everything a sampled request's shadows and its exchange task need."""

    session: aiohttp.ClientSession  # the shadows' own pool, never the primary's
    targets: dict[str, ShadowTarget]
    budget: ShadowBudget
    bounds: ShadowBounds
    metrics: Metrics
    shadow_tasks: TaskSet
    exchange_tasks: TaskSet
    completion: ExchangeCompletion
    target_secrets: tuple[str, ...] = ()  # configured keys of the shadow targets
    slice_headers: tuple[str, ...] = ()  # [report] slice_by headers whose values are stored

    def fan_out_shadows(
        self, request: web.Request, path_qs: str, body: bytes, sampled: Sampled
    ) -> PrimaryCopy:
        """Start a task per target and the exchange's task; return the primary's side copy,
        which `forward_primary` fills and the exchange task parses once it is relayed."""
        admission = sampled.admission
        primary = PrimaryCopy(self.bounds.reader("primary", admission.hold))
        exchange = self.open_exchange(request, path_qs, body, sampled)
        targets = [self.targets[name] for name in sampled.decision.targets]
        rewrites = any(target.model for target in targets)
        bodies = ShadowBodies(body, sampled.request_json if rewrites else None)
        self.budget.acquire(len(targets))
        tasks = [
            self.shadow_tasks.spawn(
                self.run_shadow(exchange, target, request, path_qs, bodies, admission),
                name=f"shadow:{target.name}:{exchange.request_id}",
            )
            for target in targets
        ]
        completing = self.exchange_tasks.spawn(
            self.completion.complete_exchange(exchange, primary, tasks, admission),
            name=f"exchange:{exchange.request_id}",
        )
        completing.add_done_callback(admission.release_unless_handed_over)
        return primary

    def open_exchange(
        self, request: web.Request, path_qs: str, body: bytes, sampled: Sampled
    ) -> Exchange:
        request_json = sampled.request_json
        return Exchange(
            request_id=uuid7(),
            started_at=datetime.now(UTC),
            method=request.method,
            path=request.path,
            route=sampled.route,
            model=requested_model(request_json),
            stream=request_json.get("stream") is True,
            request_body=body,
            request_json=None,  # parsed again for the scorers only (pipeline.score)
            header_names=stored_header_names(request.headers.keys()),
            slice_headers=slice_header_values(request.headers, self.slice_headers),
            credentials=self.credentials(request, path_qs),
        )

    def credentials(self, request: web.Request, path_qs: str) -> tuple[str, ...]:
        """Every secret this exchange's stored text must never show: the client's own (its
        auth headers and credential-named query values) and the targets' configured keys."""
        carried = header_credentials(request.headers) + query_credentials(path_qs.partition("?")[2])
        return (*dict.fromkeys(carried), *self.target_secrets)

    async def run_shadow(
        self,
        exchange: Exchange,
        target: ShadowTarget,
        request: web.Request,
        path_qs: str,
        bodies: ShadowBodies,
        admission: Admission,
    ) -> None:
        """One shadow and its bookkeeping: whatever happens, the budget is given back and the
        target's result, metrics and log line are written."""
        self.metrics.shadow_started(target.name)
        completion = Completion(error="shadow did not run")
        outcome = "error"
        reader = self.bounds.reader(target.name, admission.hold)
        try:
            completion, outcome = await call_shadow(
                self.session,
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
