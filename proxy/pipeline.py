"""`complete_exchange`: a sampled request's last stage — normalize, score, record.

Once the primary has answered and every shadow has finished (or failed, or timed out), the
primary's side copy is parsed into a `Completion` (normalize, off the primary's path), scorers
fill `scores`, and the sinks (the recorder) take the exchange. Nothing here raises into the proxy.

Memory: an exchange arrives holding bytes against the shadow memory budget
(`Exchange.held_bytes`, given back through `Exchange.on_release`). The parsed request exists
only while scorers read it; once scoring is over, the transient part of the hold (the parsed
request, the shadow bodies) goes back and only what recording keeps stays held. The last stage
that holds the exchange gives the rest back: the recorder after writing or dropping it, or
this pipeline when nothing records.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from shadowtap.answer import AnswerReader
from shadowtap.completion import Completion
from shadowtap.exchange import Exchange, ExchangeSink, Score, TargetResult
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.pricing import Prices

if TYPE_CHECKING:
    from shadowtap.bounds import Admission, ShadowBounds

log = get_logger("shadowtap.pipeline")


class Scoring(Protocol):
    # True when a scorer reads the parsed request on the event loop (`exchange.request_json`):
    # only then is the request parsed there for scoring (CPU scorers' workers parse the body).
    reads_request_json: bool

    async def score(self, exchange: Exchange) -> list[Score]: ...


class ExchangePipeline:
    """The one interface later stages plug into: scorers fill `scores`, sinks store the result.
    (`ExchangeCompletion.complete_exchange` runs them.)"""

    def __init__(self, scoring: Scoring | None, sinks: list[ExchangeSink]) -> None:
        self.scoring = scoring
        self.sinks = sinks

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


class PrimaryCopy:
    """The primary's answer as `forward_primary` relayed it: a side copy (`reader`), handed to
    the exchange's task once the primary is done, to be parsed there, off the primary's path."""

    __slots__ = ("_relayed", "reader")

    def __init__(self, reader: AnswerReader) -> None:
        self.reader = reader
        self._relayed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def head_start(self, within: float) -> None:
        """Return once the primary's answer is relayed whole, or `within` seconds after it
        was called, whichever comes first."""
        relayed = self._relayed
        if relayed.done():
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(within, _resolve, waiter)
        wake = functools.partial(_resolve_on, waiter)
        relayed.add_done_callback(wake)
        try:
            await waiter
        finally:
            timer.cancel()
            relayed.remove_done_callback(wake)

    def relayed(self) -> None:
        """The primary's answer ended, or failed: its side copy is complete."""
        self.reader.finish()
        self._relayed.set_result(None)

    async def wait(self) -> AnswerReader:
        await self._relayed
        return self.reader


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_on(future: asyncio.Future[None], _done: asyncio.Future[None]) -> None:
    _resolve(future)


@dataclass(frozen=True, slots=True)
class ExchangeCompletion:
    """The last stage of a sampled request, run by its exchange task."""

    pipeline: ExchangePipeline
    bounds: ShadowBounds
    metrics: Metrics
    primary_prices: Prices

    async def complete_exchange(
        self,
        exchange: Exchange,
        primary: PrimaryCopy,
        shadows: list[asyncio.Task[None]],
        admission: Admission,
    ) -> None:
        """normalize → score → record, once the primary and every shadow are done."""
        await self.normalize_primary(exchange, await primary.wait(), admission)
        await asyncio.gather(*shadows, return_exceptions=True)  # each fills its own result
        admission.hand_over(exchange)
        try:
            if self.pipeline.scoring is not None:
                await score(self.pipeline.scoring, exchange)
        finally:  # scoring cancelled at shutdown: the exchange is still recorded, unscored
            # The transient part of the hold (parsed request, shadow bodies) goes back now.
            give_back(exchange, admission.transient)
            self.pipeline.record(exchange)

    async def normalize_primary(
        self, exchange: Exchange, capture: AnswerReader, admission: Admission
    ) -> None:
        """The primary's side copy becomes its `Completion`, within the primary's pace."""
        try:
            completion = await capture.completion()
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
            # Its type only: its message may quote the answer, unbounded and unscrubbed (cut
            # here, a credential could be left in part); the log has the traceback.
            completion = Completion(
                status=capture.status, error=f"internal error: {type(error).__name__}"
            )
        self.bounds.observe(capture)
        self.metrics.observe_ttft(exchange.route, "primary", "primary", completion.ttft_s)
        tokens = completion.prompt_tokens, completion.completion_tokens
        cost = self.primary_prices.cost_usd(*tokens)
        exchange.results["primary"] = TargetResult("primary", "primary", completion, cost)
        self.metrics.observe_usage("primary", *tokens)


async def score(scoring: Scoring, exchange: Exchange) -> None:
    """Scorers on the event loop read the request parsed: it is parsed for them (never when no
    scorer there reads it: a 1 MB prompt's parse allocates ~12 MB) and dropped after them."""
    parsed_here = exchange.request_json is None and scoring.reads_request_json
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
