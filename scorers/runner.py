"""`ScoringRunner`: every configured scorer on every (primary, shadow) pair of an exchange.

For each non-primary target in `exchange.results` (candidates and the secondary) every scorer
sees the same `Pair`; per-response scorers also see the primary on its own. CPU-bound scorers
of one exchange run together as one job on a scoring worker process (`WorkerPool`), each pair
under its scorer's hard time limit, so the event loop only awaits; I/O scorers run
concurrently on the loop, each bounded by its `timeout_s`.

What is sent to a worker is bounded: a pair whose texts (both answers' text and tool-call
arguments, plus the request body for a scorer that reads the request) are over
`max_pair_chars` is not sent but skipped (`detail.skipped`), and a job that finds `queue_max`
jobs already waiting for a worker is skipped whole ("scoring queue full"). Both count in
`shadowtap_scorer_skipped_total`: shed load, not a scorer's fault.

`score` never raises (short of cancellation): a scorer's exception, a pair over its time limit
and a worker that died become a `Score` with `error` set, counted in
`shadowtap_scorer_errors_total` and logged without its message (messages can quote model
output). Scores are observed in `shadowtap_agreement_score`, and those under the scorer's
threshold in `shadowtap_disagreements_total`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from shadowtap.completion import Completion
from shadowtap.config import ConfigError
from shadowtap.exchange import Exchange, Score
from shadowtap.ids import unit_hash
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.scorers.base import (
    CpuScorer,
    IoScorer,
    Pair,
    Result,
    Scorer,
    ScorerSkipped,
    check_result,
)
from shadowtap.scorers.pool import CpuSettings, QueueFull, WorkerPool
from shadowtap.scorers.worker import Job, Task

log = get_logger("shadowtap.scorers")

MAX_ERROR_CHARS = 500
IO_TIMEOUT_S = 30.0  # an I/O scorer whose options have no timeout_s

Planned = tuple[Scorer[Any], Pair]


def sampled(rate: float, request_id: str, scorer: str) -> bool:
    """Per-scorer sampling, decided by a hash so one exchange gets the same answer every time
    and all its targets are scored together (candidate and secondary stay comparable)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return unit_hash(f"{scorer}\0{request_id}") < rate


def _failed_side(pair: Pair, per_response: bool) -> str | None:
    sides: list[tuple[str, Completion]] = [("target", pair.target)]
    if not per_response:
        sides.insert(0, ("primary", pair.primary))
    for side, completion in sides:
        if not completion.ok:
            return f"{side} errored"
    return None


def to_score(scorer: Scorer[Any], pair: Pair, result: Result) -> Score:
    """Check and wrap what a scorer returned; a malformed result raises (a scorer error)."""
    score, detail = check_result(result)
    return Score(pair.target_name, scorer.name, score, detail, None, scorer.threshold)


def pair_chars(pair: Pair) -> int:
    """What a pair would carry to a worker, in characters (the request body aside)."""
    sides = (pair.target,) if pair.primary is pair.target else (pair.primary, pair.target)
    total = 0
    for completion in sides:
        total += len(completion.text or "")
        total += sum(len(call.name) + len(call.arguments) for call in completion.tool_calls)
    return total


def _error_score(scorer: Scorer[Any], pair: Pair, error: BaseException) -> Score:
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    return Score(pair.target_name, scorer.name, None, None, message, scorer.threshold)


def _unscored(scorer: Scorer[Any], pair: Pair, detail: dict[str, Any]) -> Score:
    """Not applicable or skipped: no score, no error, and `detail` says why."""
    return Score(pair.target_name, scorer.name, None, detail, None, scorer.threshold)


class ScoringRunner:
    def __init__(
        self,
        scorers: list[Scorer[Any]],
        metrics: Metrics,
        session: aiohttp.ClientSession,
        settings: CpuSettings | None = None,
    ) -> None:
        self.scorers = scorers
        self.metrics = metrics
        self.session = session
        self.settings = settings or CpuSettings()
        # Only an I/O scorer sees `Pair.request` as the proxy parsed it; a CPU scorer's worker
        # is sent the request body and parses it there (`pipeline.score` reads this).
        self.reads_request_json = any(isinstance(scorer, IoScorer) for scorer in scorers)
        cpu = [scorer for scorer in scorers if isinstance(scorer, CpuScorer)]
        self._cpu_index = {id(scorer): index for index, scorer in enumerate(cpu)}
        self.pool: WorkerPool | None = None
        if cpu:
            problem = WorkerPool.check_picklable(cpu)
            if problem is not None:
                raise ConfigError(
                    f"config error: scorers.{problem[0]}: a CPU scorer runs in a worker process "
                    f"and must pickle ({problem[1]})"
                )
            self.pool = WorkerPool(cpu, self.settings.processes, self.settings.queue_max)

    async def wait_ready(self) -> bool:
        """Start the workers and wait for one to be ready (batch runs); True if there is one,
        or no CPU scorer needs one."""
        return True if self.pool is None else await self.pool.wait_ready()

    def pairs(self, exchange: Exchange) -> list[Planned]:
        primary = exchange.primary
        if primary is None:
            return []
        jobs: list[Planned] = []
        for scorer in self.scorers:
            if not sampled(scorer.rate, exchange.request_id, scorer.name):
                continue
            if scorer.per_response:
                jobs.append(
                    (scorer, Pair(exchange.request_json, primary, primary, "primary", "primary"))
                )
            for shadow in exchange.shadows():
                pair = Pair(
                    exchange.request_json, primary, shadow.completion, shadow.target, shadow.role
                )
                jobs.append((scorer, pair))
        return jobs

    async def score(self, exchange: Exchange) -> list[Score]:
        try:
            scores = await self._score(exchange)
        except Exception as error:  # a bug here must not lose the exchange
            log.error("scoring_failed", request_id=exchange.request_id, error=type(error).__name__)
            return []
        for score in scores:
            if score.error is not None:
                self.metrics.scorer_error(score.scorer)
                log.warning(
                    "scorer_error",
                    scorer=score.scorer,
                    target=score.target,
                    request_id=exchange.request_id,
                    error=score.error.partition(":")[0],  # the type only: messages quote output
                )
            elif score.score is not None and score.threshold is not None:
                self.metrics.observe_score(score.target, score.scorer, score.score, score.threshold)
            elif score.detail is not None and "skipped" in score.detail:
                self.metrics.scorer_skipped(score.scorer)
        return scores

    async def _score(self, exchange: Exchange) -> list[Score]:
        jobs = self.pairs(exchange)
        results: list[Score | None] = [None] * len(jobs)
        cpu: list[tuple[int, CpuScorer[Any], Pair]] = []
        io: list[tuple[int, IoScorer[Any], Pair]] = []
        for index, (scorer, pair) in enumerate(jobs):
            failed = _failed_side(pair, scorer.per_response)
            if failed is not None:
                results[index] = _unscored(scorer, pair, {"reason": failed})
            elif isinstance(scorer, IoScorer):
                io.append((index, scorer, pair))
            elif isinstance(scorer, CpuScorer):
                cpu.append((index, scorer, pair))
            else:
                results[index] = _error_score(
                    scorer, pair, TypeError("not a CpuScorer or IoScorer")
                )
        waits: list[Any] = [self._run_io(i, s, p) for i, s, p in io]
        if cpu:
            waits.append(self._run_cpu(exchange, cpu))
        for batch in await asyncio.gather(*waits):
            for index, score in batch:
                results[index] = score
        return [score for score in results if score is not None]

    async def _run_cpu(
        self, exchange: Exchange, cpu: list[tuple[int, CpuScorer[Any], Pair]]
    ) -> list[tuple[int, Score]]:
        assert self.pool is not None  # built whenever there is a CPU scorer
        limit = self.settings.max_pair_chars
        done: list[tuple[int, Score]] = []
        sent: list[tuple[int, CpuScorer[Any], Pair]] = []
        tasks: list[Task] = []
        limits: list[float] = []
        completions: list[Completion] = []
        positions: dict[int, int] = {}  # one copy of each answer per job, however many pairs

        def position(completion: Completion) -> int:
            if id(completion) not in positions:
                positions[id(completion)] = len(completions)
                completions.append(completion)
            return positions[id(completion)]

        reads_request = False
        for index, scorer, pair in cpu:
            size = pair_chars(pair) + (len(exchange.request_body) if scorer.reads_request else 0)
            if size > limit:
                done.append(
                    (index, _unscored(scorer, pair, {"skipped": f"pair over {limit} characters"}))
                )
                continue
            reads_request = reads_request or scorer.reads_request
            task = Task(
                self._cpu_index[id(scorer)],
                position(pair.primary),
                position(pair.target),
                pair.target_name,
                pair.role,
            )
            tasks.append(task)
            limits.append(scorer.options.timeout_s or self.settings.timeout_s)
            sent.append((index, scorer, pair))
        if not tasks:
            return done
        job = Job(
            exchange.request_body if reads_request else None, tuple(completions), tuple(tasks)
        )
        try:
            outcomes = await self.pool.run(job, limits)
        except QueueFull:
            skipped = {"skipped": "scoring queue full"}
            return done + [(index, _unscored(s, p, skipped)) for index, s, p in sent]
        for (index, scorer, pair), (score, detail, error) in zip(sent, outcomes, strict=True):
            done.append(
                (
                    index,
                    Score(pair.target_name, scorer.name, score, detail, error, scorer.threshold),
                )
            )
        return done

    async def _run_io(
        self, index: int, scorer: IoScorer[Any], pair: Pair
    ) -> list[tuple[int, Score]]:
        timeout_s = scorer.options.timeout_s or IO_TIMEOUT_S
        try:
            async with asyncio.timeout(timeout_s):
                result = await scorer.score(pair, self.session)
            score = to_score(scorer, pair, result)
        except TimeoutError:
            score = _error_score(scorer, pair, TimeoutError(f"after {timeout_s} s"))
        except ScorerSkipped as skipped:
            score = _unscored(scorer, pair, {"skipped": str(skipped)})
        except Exception as error:
            score = _error_score(scorer, pair, error)
        return [(index, score)]

    async def close(self) -> None:
        for scorer in self.scorers:
            try:
                await scorer.close()
            except Exception as error:
                log.warning("scorer_close_failed", scorer=scorer.name, error=type(error).__name__)
        if self.pool is not None:
            await self.pool.close()
