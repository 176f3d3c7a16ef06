"""Shadow targets (candidates and the secondary) and the call that mirrors a request to one.

A shadow call never raises: whatever the target does — hang, 500, reset, garbage — becomes a
`Completion` with `error` set and an outcome label, and the client never notices.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import Pace
from shadowtap.completion import Completion
from shadowtap.config import Config, SamplingConfig
from shadowtap.exchange import Role
from shadowtap.headers import shadow_request_headers
from shadowtap.pricing import Prices

DEFAULT_ANSWER_BYTES = SamplingConfig().max_answer_bytes


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
