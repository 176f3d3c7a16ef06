"""`ScoringRunner`: every configured scorer on every (primary, shadow) pair of an exchange.

For each non-primary target in `exchange.results` (candidates and the secondary) every scorer
sees the same `Pair`; per-response scorers also see the primary on its own. CPU-bound scorers
of one exchange run together as one job in a thread pool, so the event loop only awaits;
I/O scorers run concurrently on the loop, each bounded by its `timeout_s`.

The executor defaults to two threads. Threads still share the GIL with the event loop, so
on a machine short of CPU (a sidecar under a CPU limit) a scorer thread descheduled while it
holds the GIL stalls the loop too; a `ProcessPoolExecutor` (spawn context) avoids that, and
built-in scorers and pairs pickle for it (third-party CPU scorers must pickle too).

`score` never raises (short of cancellation): a scorer's exception becomes a `Score` with
`error` set, is counted in `shadowtap_scorer_errors_total` and logged without its message
(messages can quote model output). Scores are observed in `shadowtap_agreement_score`, and
those under the scorer's threshold in `shadowtap_disagreements_total`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import math
from typing import Any

import aiohttp
from shadowtap.completion import Completion
from shadowtap.exchange import Exchange, Score
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.scorers.base import CpuScorer, IoScorer, Pair, Result, Scorer, ScorerSkipped, Verdict

log = get_logger("shadowtap.scorers")

MAX_ERROR_CHARS = 500
# Float noise (0.1 + 0.2 style) may push a computed score a hair outside [0, 1]: clamp that,
# but a scorer returning 1.5 is a bug and is reported as an error.
SCORE_SLACK = 1e-9

Job = tuple[Scorer[Any], Pair]


def sampled(rate: float, request_id: str, scorer: str) -> bool:
    """Per-scorer sampling, decided by a hash so one exchange gets the same answer every time
    and all its targets are scored together (candidate and secondary stay comparable)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(f"{scorer}\0{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


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
    detail = None
    if isinstance(result, Verdict):
        result, detail = result.score, result.detail
    if result is not None:
        if isinstance(result, bool) or not isinstance(result, int | float):
            raise TypeError(f"score must be a float or None (got {type(result).__name__})")
        value = float(result)
        if not math.isfinite(value) or not -SCORE_SLACK <= value <= 1 + SCORE_SLACK:
            raise ValueError(f"score must be in [0, 1] (got {value!r})")
        result = min(1.0, max(0.0, value))
    return Score(pair.target_name, scorer.name, result, detail, None, scorer.threshold)


def _error_score(scorer: Scorer[Any], pair: Pair, error: BaseException) -> Score:
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    return Score(pair.target_name, scorer.name, None, None, message, scorer.threshold)


def _unscored(scorer: Scorer[Any], pair: Pair, detail: dict[str, Any]) -> Score:
    """Not applicable or skipped: no score, no error, and `detail` says why."""
    return Score(pair.target_name, scorer.name, None, detail, None, scorer.threshold)


def _score_cpu(scorer: CpuScorer[Any], pair: Pair) -> Score:
    try:
        return to_score(scorer, pair, scorer.score(pair))
    except ScorerSkipped as skipped:
        return _unscored(scorer, pair, {"skipped": str(skipped)})
    except Exception as error:
        return _error_score(scorer, pair, error)


def run_cpu_jobs(jobs: list[tuple[CpuScorer[Any], Pair]]) -> list[Score]:
    """Executed in the pool: one hop off the loop per exchange, not one per scorer."""
    return [_score_cpu(scorer, pair) for scorer, pair in jobs]


class ScoringRunner:
    def __init__(
        self,
        scorers: list[Scorer[Any]],
        metrics: Metrics,
        session: aiohttp.ClientSession,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.scorers = scorers
        self.metrics = metrics
        self.session = session
        self._owns_executor = executor is None
        # Two workers: scorers are short, and the proxy is meant to share small machines.
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="shadowtap-scorer"
        )

    def pairs(self, exchange: Exchange) -> list[Job]:
        primary = exchange.primary
        if primary is None:
            return []
        jobs: list[Job] = []
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
            waits.append(self._run_cpu(cpu))
        for batch in await asyncio.gather(*waits):
            for index, score in batch:
                results[index] = score
        return [score for score in results if score is not None]

    async def _run_cpu(
        self, cpu: list[tuple[int, CpuScorer[Any], Pair]]
    ) -> list[tuple[int, Score]]:
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(
                self.executor, run_cpu_jobs, [(s, p) for _, s, p in cpu]
            )
        except Exception as error:  # executor shut down or broken: every job failed
            scores = [_error_score(s, p, error) for _, s, p in cpu]
        return [(index, score) for (index, _, _), score in zip(cpu, scores, strict=True)]

    async def _run_io(
        self, index: int, scorer: IoScorer[Any], pair: Pair
    ) -> list[tuple[int, Score]]:
        timeout_s = getattr(scorer.options, "timeout_s", 30.0)
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
        if self._owns_executor:
            # Not waiting on the loop: a running scorer finishes in its thread on its own.
            self.executor.shutdown(wait=False, cancel_futures=True)
