"""Sending one recorded request to the candidate: the replay's only call out.

`send_to_candidate` is the one place a recorded request becomes a candidate request, so a
candidate that speaks another dialect than the recording (issue 12) is translated here and
nowhere else. It goes through the proxy's own `call_shadow`, so the model rewrite, the
candidate's credentials and headers, its timeout, the answer cap and normalization are exactly
those of live shadowing.

It sends through the target's own HTTP/1.1 client (`ReplayClient.pool`, as live shadows do),
aiohttp's session only for what that client does not handle. `call_shadow` returns a
`Completion`, not headers: the candidate's `Retry-After` is noted as the answer's head arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from shadowtap.completion import Completion
from shadowtap.dialects import Untranslatable, dialect_for_path
from shadowtap.replay.source import Recorded
from shadowtap.shadow import ShadowBodies, ShadowTarget, UnencodableBody
from shadowtap.shadow_call import call_shadow
from shadowtap.shadow_request import shadow_path
from shadowtap.upstream import UpstreamPool

# What a replayed request carries of the client's headers: only what shapes the answer. The
# client's credentials were never stored, so a candidate with `forward_client_auth` gets none.
REPLAY_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
MAX_HEADER_CHARS = 64


@dataclass(slots=True)
class Attempt:
    completion: Completion
    outcome: str  # ok, error, timeout, skipped (not sendable)
    retry_after: str | None = None  # the answer's Retry-After header, as sent (capped)


@dataclass(frozen=True, slots=True)
class ReplayClient:
    """What a replay sends through: the target's own HTTP/1.1 client (`pool`), and aiohttp's
    session for what that client does not handle (HEAD)."""

    session: aiohttp.ClientSession
    pool: UpstreamPool

    @classmethod
    def open(cls, target: ShadowTarget, limit: int) -> ReplayClient:
        """At most `limit` connections through the session (the pool opens no more than the
        replay's concurrency sends at once)."""
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            timeout=aiohttp.ClientTimeout(total=None),  # each call has the target's own timeout
            cookie_jar=aiohttp.DummyCookieJar(),  # a cookie the candidate sets is never sent back
        )
        return cls(session, UpstreamPool.of(target.url))

    async def close(self) -> None:
        await self.pool.close()
        await self.session.close()


async def send_to_candidate(
    client: ReplayClient, target: ShadowTarget, recorded: Recorded
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
    retry_after: list[str | None] = [None]

    def note_retry_after(headers: Mapping[str, str]) -> None:
        value = headers.get("Retry-After")
        retry_after[0] = value[:MAX_HEADER_CHARS] if value is not None else None

    completion, outcome = await call_shadow(
        client.session,
        target,
        recorded.method,
        shadow_path(recorded.path, dialect, target),
        body,
        REPLAY_HEADERS,
        route_dialect=dialect,
        pool=client.pool,
        on_head=note_retry_after,
    )
    return Attempt(completion, outcome, retry_after[0])
