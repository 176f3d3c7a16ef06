"""What happens to a finished exchange: score it, then record it. Never raises into the proxy."""

from __future__ import annotations

from typing import Protocol

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

    async def finish(self, exchange: Exchange) -> None:
        try:
            if self.scoring is not None:
                try:
                    exchange.scores = await self.scoring.score(exchange)
                except Exception:  # the runner counts scorer errors; this guards the runner
                    log.exception("scoring_failed", request_id=exchange.request_id)
        finally:  # scoring cancelled at shutdown: the exchange is still recorded, unscored
            for sink in self.sinks:
                try:
                    sink.record(exchange)
                except Exception:
                    log.exception("record_failed", request_id=exchange.request_id)
