"""`ShadowBounds`: the proxy's budgets for shadow work, in the terms the handler asks about.

One per proxy: the memory budget every sampled exchange holds against, one `Pace` per target
(the primary's side copy included), the answer cap, and the once-a-second log of shedding.
The handler asks four things: which targets owe (shed them), may this request be sampled
(`admit`), a reader for one answer (`reader`), and to count what the reader did (`observe`).

Example:
    bounds = ShadowBounds(config.sampling, ["small"], metrics)
    admission = bounds.admit(body, values, copies=0)   # None: shed for memory
    reader = bounds.reader("small", admission.hold)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shadowtap.answer import AnswerLimits, AnswerReader
from shadowtap.budget import Hold, MemoryBudget, Pace, request_hold_bytes
from shadowtap.config import SamplingConfig
from shadowtap.dialects.tables import OPENAI_CHAT
from shadowtap.exchange import Exchange
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.normalize import json_values_bound
from shadowtap.sampling import OncePerSecond, SamplingDecision

log = get_logger("shadowtap.bounds")
PRIMARY = "primary"


@dataclass(slots=True)
class Admission:
    """A sampled exchange's bytes: held from admission until the exchange's last holder is
    done with it. The handler holds them until `hand_over`; then the pipeline (its transient
    part after scoring, the rest when nothing records) or the recorder gives them back."""

    hold: Hold  # everything the exchange holds, answers included as they are read
    transient: int  # the part given back once scoring is over (parsed request, shadow bodies)
    handed_over: bool = False

    def charge(self, size: int) -> None:
        """Count a shadow body of `size` bytes made from the request (re-encoded when its
        model could not be replaced in the client's bytes): it exists already, so it is
        counted over the limit if need be, and given back with the transient part."""
        self.hold.force(size)
        self.transient += size

    def hand_over(self, exchange: Exchange) -> None:
        exchange.held_bytes, exchange.on_release = self.hold.size, self.hold.shrink
        self.handed_over = True

    def release_unless_handed_over(self, _task: object = None) -> None:
        """The exchange task ended (or was cancelled) before handing the exchange over."""
        if not self.handed_over:
            self.hold.close()


class ShadowBounds:
    def __init__(self, sampling: SamplingConfig, targets: Iterable[str], metrics: Metrics) -> None:
        self.memory = MemoryBudget(sampling.max_held_bytes)
        self.limits = AnswerLimits(sampling.max_answer_bytes)
        # The primary's side copy is never slowed (it is the client's answer): no byte rate,
        # only its parsing, later and off the primary's path, takes its share of the loop.
        rates = {PRIMARY: 0} | dict.fromkeys(targets, sampling.max_read_bytes_per_second)
        self.paces = {
            # A burst of one whole answer: a single healthy answer is never slowed.
            name: Pace(
                rate,
                sampling.max_answer_bytes,
                sampling.max_loop_share,
                on_wait=metrics.throttled_for(name),
            )
            for name, rate in rates.items()
        }
        self._metrics = metrics
        self._shed_log = OncePerSecond()
        metrics.track_held_bytes(lambda: self.memory.held)

    def owing(self) -> list[str]:
        """Shadow targets that overspent their pace: new shadows to them are shed."""
        return [name for name, pace in self.paces.items() if name != PRIMARY and pace.owes()]

    def admit(self, body: bytes, values: int | None, copies: int) -> Admission | None:
        """Hold a sampled request's bytes, or None when the memory budget has no room."""
        if values is None:
            values = json_values_bound(body)
        lasting, transient = request_hold_bytes(len(body), values, copies)
        hold = self.memory.admit(lasting + transient)
        return None if hold is None else Admission(hold, transient)

    def reader(self, target: str, hold: Hold, dialect: str = OPENAI_CHAT) -> AnswerReader:
        """A reader for `target`'s answer, in the API it answers in (`shadowtap.dialects`)."""
        return AnswerReader(target, self.paces[target], self.limits, hold, dialect)

    def observe(self, reader: AnswerReader) -> None:
        self._metrics.observe_answer(reader.target, reader.decoded, reader.cut)

    def log_shed(self, route: str, decision: SamplingDecision) -> None:
        """Shedding is counted per request; it is logged at most once a second."""
        unlogged = self._shed_log.due()
        if unlogged is not None:
            log.info(
                "shadow_shed",
                route=route,
                reason=decision.reason,
                targets=list(decision.shed),
                held_bytes=self.memory.held,
                shed_since_last_line=unlogged,
            )
