"""Sending one recorded request to the candidate: the replay's only call out.

`send_to_candidate` is the one place a recorded request becomes a candidate request, so a
candidate that speaks another dialect than the recording (issue 12) is translated here and
nowhere else. It goes through the proxy's own `call_shadow`, so the model rewrite, the
candidate's credentials and headers, its timeout, the answer cap and normalization are exactly
those of live shadowing.

`call_shadow` returns a `Completion`, not headers; the candidate's `Retry-After` is read by the
session's response class into a per-task slot (a context variable), so the shadow path stays
as it is.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

import aiohttp
from aiohttp import ClientResponse
from aiohttp.connector import Connection
from multidict import CIMultiDict, CIMultiDictProxy
from shadowtap.completion import Completion
from shadowtap.dialects import Untranslatable, dialect_for_path
from shadowtap.replay.source import Recorded
from shadowtap.shadow import ShadowBodies, ShadowTarget, UnencodableBody, call_shadow
from shadowtap.shadow_request import shadow_path

# What a replayed request carries of the client's headers: only what shapes the answer. The
# client's credentials were never stored, so a candidate with `forward_client_auth` gets none.
REPLAY_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
MAX_HEADER_CHARS = 64

_retry_after: contextvars.ContextVar[list[str | None] | None] = contextvars.ContextVar(
    "shadowtap_replay_retry_after", default=None
)


@dataclass(slots=True)
class Attempt:
    completion: Completion
    outcome: str  # ok, error, timeout, skipped (not sendable)
    retry_after: str | None = None  # the answer's Retry-After header, as sent (capped)


class RetryAfterResponse(aiohttp.ClientResponse):
    """A response that leaves its `Retry-After` header in the sending task's slot. (A trace
    hook did this before: with a `TraceConfig` on the session aiohttp sends every trace
    signal of every request, ~5% of the replay's event-loop time.)"""

    async def start(self, connection: Connection) -> ClientResponse:
        response = await super().start(connection)
        slot = _retry_after.get()
        if slot is not None:
            value = self.headers.get("Retry-After")
            slot[0] = value[:MAX_HEADER_CHARS] if value is not None else None
        return response


def replay_session(limit: int) -> aiohttp.ClientSession:
    """The session a replay sends through: at most `limit` connections (the concurrency)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=None),  # each call has the target's own timeout
        response_class=RetryAfterResponse,
        cookie_jar=aiohttp.DummyCookieJar(),  # a cookie the candidate sets is never sent back
    )


async def send_to_candidate(
    session: aiohttp.ClientSession, target: ShadowTarget, recorded: Recorded
) -> Attempt:
    """Send `recorded` to `target` as configured; never raises for what the candidate does.

    A target on another API gets the request translated, at that API's path, exactly as live
    shadowing sends it; one with no faithful translation is skipped with the reason."""
    dialect = recorded.dialect or dialect_for_path(recorded.path)
    try:
        bodies = ShadowBodies(recorded.body, recorded.request_json, dialect)
        body = bodies.for_target(target)
    except (UnencodableBody, Untranslatable) as error:
        return Attempt(Completion(error=f"not sent: {error}"), "skipped")
    slot: list[str | None] = [None]
    token = _retry_after.set(slot)
    try:
        completion, outcome = await call_shadow(
            session,
            target,
            recorded.method,
            shadow_path(recorded.path, dialect, target),
            body,
            REPLAY_HEADERS,
            route_dialect=dialect,
        )
    finally:
        _retry_after.reset(token)
    return Attempt(completion, outcome, slot[0])
