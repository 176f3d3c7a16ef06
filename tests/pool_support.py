"""What the scoring pool's test modules share: a hostile scorer, a scored exchange, the pool."""

from __future__ import annotations

from typing import Any

from shadowtap.completion import Completion
from shadowtap.exchange import Exchange
from shadowtap.scorers.base import CpuScorer, ScorerOptions
from shadowtap.scorers.pool import WorkerPool
from shadowtap.scorers.runner import ScoringRunner

from tests.exchanges import chat_exchange
from tests.scorer_plugins import Hostile


def hostile(timeout_s: float) -> CpuScorer[Any]:
    return Hostile("hostile", ScorerOptions(type="hostile", timeout_s=timeout_s))


def answered(text: str) -> Exchange:
    answers = {
        "primary": Completion(status=200, text="q"),
        "cand": Completion(status=200, text=text),
    }
    return chat_exchange(answers)


def pool_of(runner: ScoringRunner) -> WorkerPool:
    assert runner.pool is not None
    return runner.pool
