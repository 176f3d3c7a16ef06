"""What happens to a finished exchange: score it, then record it. Never raises into the proxy.

Memory: an exchange arrives holding bytes against the shadow memory budget
(`Exchange.held_bytes`, given back through `Exchange.on_release`). The parsed request exists
only while scorers read it; once scoring is over, the transient part of the hold (the parsed
request, the shadow bodies) goes back and only what recording keeps stays held. The last stage
that holds the exchange gives the rest back: the recorder after writing or dropping it, or
this pipeline when nothing records.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from shadowtap.exchange import Exchange, ExchangeSink, Score
from shadowtap.log import get_logger

log = get_logger("shadowtap.pipeline")


class Scoring(Protocol):
    async def score(self, exchange: Exchange) -> list[Score]: ...


class ExchangePipeline:
    """The one interface later stages plug into: scorers fill `scores`, sinks store the result."""

    def __init__(self, scoring: Scoring | None, sinks: list[ExchangeSink]) -> None:
        self.scoring = scoring
        self.sinks = sinks

    async def finish(self, exchange: Exchange, transient_bytes: int = 0) -> None:
        """Score, then record. `transient_bytes` of the exchange's hold are given back once
        scoring is over; the rest when the last holder is done with it."""
        try:
            if self.scoring is not None:
                await _score(self.scoring, exchange)
        finally:  # scoring cancelled at shutdown: the exchange is still recorded, unscored
            give_back(exchange, transient_bytes)
            self.record(exchange)

    def record(self, exchange: Exchange) -> None:
        """Hand the exchange to every sink; each sink gives its bytes back once done with it
        (the recorder after writing or dropping it). With no sink, they come back now."""
        for sink in self.sinks:
            try:
                sink.record(exchange)
            except Exception:
                log.exception("record_failed", request_id=exchange.request_id)
        if not self.sinks:
            exchange.release()


async def _score(scoring: Scoring, exchange: Exchange) -> None:
    """Scorers read the request parsed; it is parsed for them and dropped after them."""
    parsed_here = exchange.request_json is None
    if parsed_here:
        exchange.request_json = _request_object(exchange.request_body)
    try:
        exchange.scores = await scoring.score(exchange)
    except Exception:  # the runner counts scorer errors; this guards the runner itself
        log.exception("scoring_failed", request_id=exchange.request_id)
    finally:
        if parsed_here:  # no later stage needs it: never hold both raw and parsed
            exchange.request_json = None


def _request_object(body: bytes) -> dict[str, Any] | None:
    # Sampled requests are JSON objects within the parse bounds (decide_sampling checked).
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def give_back(exchange: Exchange, size: int) -> None:
    """Return `size` of the exchange's held bytes early (the rest stays held)."""
    size = min(size, exchange.held_bytes)
    if size > 0 and exchange.on_release is not None:
        exchange.on_release(size)
        exchange.held_bytes -= size
