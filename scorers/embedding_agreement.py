"""`embedding_agreement`: do two embedding models place the same inputs alike? In [0, 1].

For an `openai-embeddings` exchange each answer holds one vector per input
(`Completion.embeddings`, in input order).

* **Same dimensions** — the cosine of each pair (the primary's vector for input i against the
  target's vector for input i), negative cosines as 0, averaged.
  `detail = {"method": "cosine", "pairs": n, "min": lowest cosine}`.
* **Different dimensions** (another model family, or another `dimensions`) — vectors from two
  spaces cannot be compared, but how each model orders the batch by closeness can: for each
  input the other inputs are ranked by cosine on each side, the two rankings are compared with
  Spearman's rank correlation, and the score is the mean correlation, negative as 0 (unrelated
  orders score about 0, the same order 1).
  `detail = {"method": "neighbour_rank", "inputs": n, "rho": mean correlation}`.
  Ranking needs two neighbours per input, so with fewer than three inputs it is not
  applicable (None, the reason in `detail`).

An input the target returned no vector for counts 0 (a short answer costs as much as a wrong
one; `detail.missing`). Not applicable when neither answer has vectors (not an embeddings
exchange); 0 when only one has. A zero vector has no direction: its cosine with anything is 0.

Work is bounded: at most `max_work` multiply-adds per call, in pure Python while holding the
GIL (30-100 ns each, so the default 500 000 is some 15-50 ms; `bench/embeddings.py` measures
it). Beyond that only the leading inputs are compared and `detail.truncated` says so: 108
pairs of 1536-dimension vectors, or 14 inputs ranked across 1536 and 3072 dimensions.

    [scorers.embeddings]
    type = "embedding_agreement"
    threshold = 0.9
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field
from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict

Vector = Sequence[float]
MIN_RANKED_INPUTS = 3  # each input needs two neighbours for an order to compare


class EmbeddingAgreementOptions(ScorerOptions):
    max_work: Annotated[int, Field(gt=0)] = 500_000


def _dot(a: Vector, b: Vector) -> float:
    return sum(map(operator.mul, a, b))


def _unit(vector: Vector) -> Vector:
    norm = math.hypot(*vector)  # scaled inside: tiny or huge components neither vanish nor overflow
    return [x / norm for x in vector] if norm else vector


def _dimension(vectors: Sequence[Vector], side: str) -> int:
    dimensions = {len(vector) for vector in vectors}
    if len(dimensions) != 1:
        raise ValueError(f"the {side}'s vectors have different lengths")
    return dimensions.pop()


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank: `ranks([3, 1, 3]) == [2.5, 1, 2.5]`."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in order[start : end + 1]:
            result[position] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when either side orders nothing (all tied)."""
    mean = (len(x) + 1) / 2
    dx = [r - mean for r in ranks(x)]
    dy = [r - mean for r in ranks(y)]
    spread = math.sqrt(_dot(dx, dx) * _dot(dy, dy))
    return _dot(dx, dy) / spread if spread else None


def _similarities(vectors: Sequence[Vector]) -> list[list[float]]:
    units = [_unit(vector) for vector in vectors]
    sims = [[0.0] * len(units) for _ in units]
    for i, a in enumerate(units):
        for j in range(i + 1, len(units)):
            # Rounded so that equal distances tie instead of ordering by float noise.
            sims[i][j] = sims[j][i] = round(_dot(a, units[j]), 12)
    return sims


def _ranked_inputs(inputs: int, dims: int, budget: int) -> int:
    """How many leading inputs the pairwise cosines of both sides fit in `budget`."""
    fit = inputs
    while fit >= MIN_RANKED_INPUTS and fit * (fit + 1) // 2 * dims > budget:
        fit -= 1  # normalizing is n·dims, the pairs n(n-1)/2·dims: n(n+1)/2·dims in all
    return fit


class EmbeddingAgreement(CpuScorer[EmbeddingAgreementOptions]):
    Options = EmbeddingAgreementOptions

    def score(self, pair: Pair) -> Result:
        primary, target = pair.primary.embeddings or [], pair.target.embeddings or []
        if not primary and not target:
            return None
        if not primary or not target:
            side = "target" if primary else "primary"
            return Verdict(0.0, {"reason": f"the {side} has no vectors"})
        dim_primary, dim_target = _dimension(primary, "primary"), _dimension(target, "target")
        paired = min(len(primary), len(target))
        missing = max(len(primary), len(target)) - paired
        if dim_primary == dim_target:
            score, detail = self._cosines(primary, target, paired, dim_primary)
        else:
            score, detail = self._neighbour_ranks(primary, target, paired, dim_primary + dim_target)
        if score is None:
            return Verdict(None, detail)
        compared = detail["pairs"] if "pairs" in detail else detail["inputs"]
        if missing:
            detail["missing"] = missing
            score = score * compared / (compared + missing)
        if compared < paired:
            detail["truncated"] = True
        return Verdict(min(1.0, max(0.0, score)), detail)

    def _cosines(
        self, primary: Sequence[Vector], target: Sequence[Vector], paired: int, dim: int
    ) -> tuple[float | None, dict[str, Any]]:
        compared = min(paired, self.options.max_work // (3 * dim))  # a·a, b·b and a·b
        if not compared:
            return None, {"method": "cosine", "reason": "vectors too long for max_work"}
        cosines = [
            _dot(_unit(a), _unit(b))
            for a, b in zip(primary[:compared], target[:compared], strict=True)
        ]
        mean = sum(max(0.0, cosine) for cosine in cosines) / compared
        return mean, {"method": "cosine", "pairs": compared, "min": round(min(cosines), 6)}

    def _neighbour_ranks(
        self, primary: Sequence[Vector], target: Sequence[Vector], paired: int, dims: int
    ) -> tuple[float | None, dict[str, Any]]:
        compared = _ranked_inputs(paired, dims, self.options.max_work)
        if compared < MIN_RANKED_INPUTS:
            why = "fewer than 3 inputs" if paired < MIN_RANKED_INPUTS else "vectors too long"
            return None, {"method": "neighbour_rank", "reason": f"dimensions differ, {why}"}
        sims_primary = _similarities(primary[:compared])
        sims_target = _similarities(target[:compared])
        rhos = []
        for i in range(compared):
            rho = spearman(
                [s for j, s in enumerate(sims_primary[i]) if j != i],
                [s for j, s in enumerate(sims_target[i]) if j != i],
            )
            if rho is not None:
                rhos.append(rho)
        if not rhos:
            return None, {"method": "neighbour_rank", "reason": "no input has ordered neighbours"}
        mean = sum(rhos) / len(rhos)
        return mean, {"method": "neighbour_rank", "inputs": compared, "rho": round(mean, 6)}
