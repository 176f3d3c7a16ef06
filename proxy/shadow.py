"""Shadow targets (candidates and the secondary), and the stage that mirrors a request to them.

`Shadowing.fan_out_shadows` starts the sampled request's exchange task (`mirror`). Once the
primary's request is on its way, that task opens the `Exchange`, starts one task per target
(`run_shadow`: the call and its bookkeeping), and completes the exchange once every target has
answered (`pipeline.ExchangeCompletion.complete_exchange`).
A shadow never raises: whatever the target does — hang, 500, reset, garbage — becomes a
`Completion` with `error` set and an outcome label, and the client never notices.

Where a target sees the request: `shadow_request` makes its body (the client's, or translated
into the target's API), path and headers, `shadow_call.call_shadow` sends it; its answer is
read by an `AnswerReader` in the target's API. A request with no faithful translation for a
target is not sent to it: the shadow is recorded as `skipped`, with the reason.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from shadowtap.completion import Completion, not_sent
from shadowtap.dialects.tables import OPENAI_CHAT
from shadowtap.exchange import Exchange, TargetResult
from shadowtap.headers import (
    header_credentials,
    slice_header_values,
    stored_header_names,
)
from shadowtap.ids import uuid7
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.pipeline import ExchangeCompletion, PrimaryCopy
from shadowtap.sampling import OncePerSecond
from shadowtap.shadow_call import call_shadow
from shadowtap.shadow_request import (
    ShadowBodies,
    ShadowTarget,
    UnencodableBody,
    Untranslatable,
    shadow_path,
    shadow_targets,
)
from shadowtap.tasks import TaskSet
from shadowtap.upstream import UpstreamPool
from shadowtap.urls import query_credentials

if TYPE_CHECKING:
    from shadowtap.bounds import Admission, ShadowBounds
    from shadowtap.sampling import Sampled, ShadowBudget

# What other stages and replay take from here (targets and bodies live in `shadow_request`).
__all__ = [
    "ShadowBodies",
    "ShadowTarget",
    "Shadowing",
    "UnencodableBody",
    "requested_model",
    "shadow_targets",
]

log = get_logger("shadowtap.proxy")
MODEL_TEXT_CHARS = 200
# The most credential values (and characters) one exchange's stored text is scrubbed of. A
# request carrying more is not shadowed: each of its texts is searched for each value in a
# few forms (`ExactSecrets`), and aiohttp lets a client send 128 headers of 8 KiB, cookie
# headers tens of thousands of values (60,120 kept the recorder's thread busy for hours).
MAX_CREDENTIALS = 256
MAX_CREDENTIAL_CHARS = 64 * 1024
# How long a sampled request's shadows wait behind its primary (see `Shadowing.mirror`).
PRIMARY_HEAD_START_S = 0.005
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")  # bytes decoding with surrogateescape kept


def _credential_texts(values: list[str]) -> list[str]:
    """Credentials as stored text can show them. aiohttp hands header bytes that are not
    UTF-8 over as lone surrogates, which text cannot hold (the recorder failed on such a key):
    a value with any is kept as an answer decoding it would read it (U+FFFD for each bad
    byte), and its UTF-8 runs apart, so an echo of it is scrubbed however it was decoded."""
    texts = []
    for value in values:
        if value.isascii() or not _ESCAPED_BYTES.search(value):
            texts.append(value)
            continue
        texts.append(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        texts += _ESCAPED_BYTES.split(value)  # runs too short to be a secret are not scrubbed
    return texts


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
    # Each sampled route's API (absent: not known; read as OpenAI chat, never translated).
    route_dialects: Mapping[str, str] = field(default_factory=dict)
    # Each target's own connections (`shadowtap.upstream`); a target without one uses `session`.
    pools: Mapping[str, UpstreamPool] = field(default_factory=dict)
    _refused_log: OncePerSecond = field(default_factory=OncePerSecond)

    def fan_out_shadows(
        self, request: web.Request, path_qs: str, body: bytes, sampled: Sampled
    ) -> PrimaryCopy:
        """Start the exchange's task; return the primary's side copy, which `forward_primary`
        fills and that task parses once it is relayed.

        The task opens the exchange and starts a task per target (`mirror`) only when the
        handler first waits, on the primary: the primary's request is on its way before any of
        that bookkeeping runs (~0.1-0.3 ms of a sampled request's time to first token)."""
        admission = sampled.admission
        dialect = self.route_dialects.get(sampled.route)
        parsed = sampled.request_json
        if parsed is not None:
            sampled.model, sampled.stream = requested_model(parsed), parsed.get("stream") is True
            targets = (self.targets[name] for name in sampled.decision.targets)
            if not any(target.reads_parsed(dialect) for target in targets):
                # Dropped before the primary is forwarded: a 1 MB prompt's parse (~1-12 MB)
                # is never held beside its bytes while the primary relays its answer.
                sampled.request_json = None
        reads = dialect or OPENAI_CHAT
        primary = PrimaryCopy(self.bounds.reader("primary", admission.hold, reads))
        # Taken now, against the count `decide_sampling` just read: no other request can
        # claim the same room before the shadows start.
        self.budget.acquire(len(sampled.decision.targets))
        arrived = time.time()
        mirroring = self.exchange_tasks.spawn(
            self.mirror(request, path_qs, body, sampled, primary, arrived),
            name=f"exchange:{sampled.route}",
        )
        mirroring.add_done_callback(admission.release_unless_handed_over)
        return primary

    async def mirror(
        self,
        request: web.Request,
        path_qs: str,
        body: bytes,
        sampled: Sampled,
        primary: PrimaryCopy,
        arrived: float,
    ) -> None:
        """The exchange's task: open it, start a task per target, then complete it.

        It first gives the primary a head start (`PRIMARY_HEAD_START_S`, or until its answer is
        relayed whole): ~0.2-0.3 ms of shadow work (opening the exchange, each target's
        request, the target's own reading of it) must not compete for the CPU with a primary
        that answers at once, nor with the application reading that answer (a sidecar shares
        its pod's CPU). A model's first token takes far longer than the head start, so against
        one the shadows only go out a few milliseconds later; their latency is timed from
        their own request."""
        admission = sampled.admission
        dialect = self.route_dialects.get(sampled.route)
        targets = [self.targets[name] for name in sampled.decision.targets]
        try:
            await primary.head_start(PRIMARY_HEAD_START_S)
            exchange = self.open_exchange(request, path_qs, body, sampled, arrived)
            if exchange is None:  # more credentials than its text can be scrubbed of
                self.give_up(len(targets), primary)
                for target in targets:  # sampled, then dropped: counted like a shed shadow
                    self.metrics.shadow_shed(target.name)
                return
            exchange.dialect = dialect or OPENAI_CHAT
            # A model is rewritten in the client's bytes (`Spliced`): the parsed request is
            # still here only for a target that reads it (a translation; `fan_out_shadows`).
            bodies = ShadowBodies(
                body, sampled.request_json, dialect, request.headers.keys(), charge=admission.charge
            )
        except asyncio.CancelledError:  # shut down while waiting on the primary
            self.give_up(len(targets), primary)
            raise
        except Exception:  # a bug here costs this exchange, never the primary's answer
            log.exception("shadowing_failed", path=request.path)
            self.give_up(len(targets), primary)
            return
        del sampled  # its parsed request is not held on past here
        asyncio.current_task().set_name(f"exchange:{exchange.request_id}")  # type: ignore[union-attr]
        tasks = [
            self.shadow_tasks.spawn(
                self.run_shadow(exchange, target, request, path_qs, bodies, admission),
                name=f"shadow:{target.name}:{exchange.request_id}",
            )
            for target in targets
        ]
        await self.completion.complete_exchange(exchange, primary, tasks, admission)

    def give_up(self, shadows: int, primary: PrimaryCopy) -> None:
        """No exchange after all: the budget its shadows took comes back, and the relay stops
        copying the primary's answer."""
        for _ in range(shadows):
            self.budget.release()
        primary.reader.fail("shadowing failed")
        primary.reader.abandon()

    def open_exchange(
        self, request: web.Request, path_qs: str, body: bytes, sampled: Sampled, arrived: float
    ) -> Exchange | None:
        """The exchange, or None when its request carries more credentials than
        `MAX_CREDENTIALS` (or `MAX_CREDENTIAL_CHARS`): then it is not shadowed."""
        credentials = self.credentials(request, path_qs)
        # The client's own; the targets' configured keys are shared by every exchange.
        carried = credentials[: len(credentials) - len(self.target_secrets)]
        carried_chars = sum(map(len, carried))
        if len(carried) > MAX_CREDENTIALS or carried_chars > MAX_CREDENTIAL_CHARS:
            if (quiet := self._refused_log.due()) is not None:
                log.warning("too_many_credentials", values=len(carried), not_logged=quiet)
            return None
        slices = slice_header_values(request.headers, self.slice_headers)
        # Its header values are held with its raw body until it is recorded, and are as large
        # as a client makes them (aiohttp's limits: 128 headers of up to 8 KiB each): counted.
        sampled.admission.hold.force(carried_chars + sum(map(len, slices.values())))
        return Exchange(
            request_id=uuid7(),
            started_at=datetime.fromtimestamp(arrived, UTC),
            method=request.method,
            path=request.path,
            route=sampled.route,
            model=sampled.model,
            stream=sampled.stream,
            request_body=body,
            request_json=None,  # parsed again for the scorers only (pipeline.score)
            header_names=stored_header_names(request.headers.keys()),
            slice_headers=slices,
            credentials=credentials,
        )

    def credentials(self, request: web.Request, path_qs: str) -> tuple[str, ...]:
        """Every secret this exchange's stored text must never show: the client's own (its
        auth headers and credential-named query values) and the targets' configured keys."""
        carried = header_credentials(request.headers) + query_credentials(path_qs.partition("?")[2])
        return (*dict.fromkeys(_credential_texts(carried)), *self.target_secrets)

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
        dialect = bodies.dialect
        reader = self.bounds.reader(target.name, admission.hold, target.speaks(dialect))
        try:
            completion, outcome = await call_shadow(
                self.session,
                target,
                request.method,
                shadow_path(path_qs, dialect, target),
                bodies.for_target(target),
                request.headers,
                reader,
                dialect,
                self.pools.get(target.name),
            )
        except (Untranslatable, UnencodableBody) as error:
            completion, outcome = not_sent(str(error)), "skipped"
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
