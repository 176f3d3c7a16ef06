"""Per-target measures the report is built from: pairs as Python columns, histograms, groups.

Kept apart from `build` so that module reads as the report's recipe, and these as its parts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from shadowtap.completion import was_sent
from shadowtap.report import stats
from shadowtap.report.model import Example, Usage
from shadowtap.report.sources import Source

HISTOGRAM_BINS = 20
LATENCY_BINS = 30

NUMERIC_COLUMNS = (
    "request_id",
    "route",
    "model",
    "primary_status",
    "primary_error",
    "candidate_status",
    "candidate_error",
    "primary_latency_ms",
    "candidate_latency_ms",
    "primary_ttft_ms",
    "candidate_ttft_ms",
    "primary_prompt_tokens",
    "candidate_prompt_tokens",
    "primary_completion_tokens",
    "candidate_completion_tokens",
    "primary_cost_usd",
    "candidate_cost_usd",
    "scores",
)


def is_ok(status: int | None, error: str | None) -> bool:
    return error is None and status is not None and 200 <= status < 300


class Rows:
    """A target's pairs as columns of Python values, with the filters the report needs.

    A shadow that was never sent (no faithful translation for its target: `not sent: ...`)
    is no pair: the candidate did not fail, it was not asked, so it is left out (and counted
    in `not_sent`)."""

    def __init__(self, records: list[tuple[Any, ...]]) -> None:
        every = [dict(zip(NUMERIC_COLUMNS, r, strict=True)) for r in records]
        self.records = [r for r in every if was_sent(r["candidate_status"], r["candidate_error"])]
        self.not_sent = len(every) - len(self.records)
        for r in self.records:
            r["scores"] = dict(r["scores"] or {})
            r["primary_ok"] = is_ok(r["primary_status"], r["primary_error"])
            r["candidate_ok"] = is_ok(r["candidate_status"], r["candidate_error"])
        self._means: dict[tuple[str, float], stats.Interval] = {}

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> Rows:
        """A subset of another `Rows`' records (already converted)."""
        subset = cls([])
        subset.records = records
        subset.not_sent = 0
        return subset

    def __len__(self) -> int:
        return len(self.records)

    def mean(self, scorer: str, confidence: float, target: str) -> stats.Interval:
        """Bootstrap interval of a scorer's mean, computed once: the secondary's is shown
        beside every candidate."""
        key = (scorer, confidence)
        if key not in self._means:
            label = f"{target}:{scorer}:mean"
            self._means[key] = stats.bootstrap_mean(self.scores(scorer), confidence, label)
        return self._means[key]

    def scores(self, scorer: str) -> list[float]:
        return [r["scores"][scorer] for r in self.records if r["scores"].get(scorer) is not None]

    def scorers(self) -> set[str]:
        return {name for r in self.records for name in r["scores"]}

    def paired(self, column: str, *, both_ok: bool = True) -> tuple[list[float], list[float]]:
        """(candidate, primary) values of `column` on the same requests."""
        candidate, primary = [], []
        for r in self.records:
            c, p = r[f"candidate_{column}"], r[f"primary_{column}"]
            if c is None or p is None or (both_ok and not (r["primary_ok"] and r["candidate_ok"])):
                continue
            candidate.append(float(c))
            primary.append(float(p))
        return candidate, primary


def per_1k(values: Iterable[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return 1000 * stats.mean(present) if present else None


def usage(rows: Rows, side: str) -> Usage:
    return Usage(
        prompt_tokens=per_1k(r[f"{side}_prompt_tokens"] for r in rows.records),
        completion_tokens=per_1k(r[f"{side}_completion_tokens"] for r in rows.records),
        cost_usd=per_1k(r[f"{side}_cost_usd"] for r in rows.records),
    )


def score_histogram(values: Sequence[float]) -> list[int]:
    counts = [0] * HISTOGRAM_BINS
    for v in values:
        counts[min(HISTOGRAM_BINS - 1, max(0, int(v * HISTOGRAM_BINS)))] += 1
    return counts


def latency_edges(values: Iterable[float]) -> list[float]:
    """Log-spaced bin edges spanning every latency seen (latencies are right-skewed)."""
    positive = [v for v in values if v > 0]
    if not positive:
        return []
    low, high = math.log10(min(positive)), math.log10(max(positive))
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    step = (high - low) / LATENCY_BINS
    return [10 ** (low + i * step) for i in range(LATENCY_BINS + 1)]


def latency_histogram(values: Iterable[float], edges: list[float]) -> list[int]:
    counts = [0] * max(0, len(edges) - 1)
    if not counts:
        return counts
    low, high = math.log10(edges[0]), math.log10(edges[-1])
    for v in values:
        if v > 0:
            position = (math.log10(v) - low) / (high - low) * len(counts)
            counts[min(len(counts) - 1, max(0, int(position)))] += 1
    return counts


def share_under(
    values: Sequence[float], threshold: float | None, confidence: float
) -> stats.Interval | None:
    if threshold is None or not values:
        return None
    return stats.wilson(sum(1 for v in values if v < threshold), len(values), confidence)


def request_text(body: Any) -> str | None:
    """The last user message of a chat request, or the body as stored when it has none."""
    if body is None:
        return None
    try:
        data = json.loads(body) if isinstance(body, str) else body
    except json.JSONDecodeError:
        return str(body)
    messages = data.get("messages") if isinstance(data, dict) else None
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):  # content parts: keep the text ones
                    texts = [p.get("text", "") for p in content if isinstance(p, dict)]
                    return "\n".join(t for t in texts if t)
                return None if content is None else str(content)
    return body if isinstance(body, str) else json.dumps(body)


def rank_disagreeing(rows: Rows, scorers: list[str], limit: int) -> list[str]:
    ranked = []
    for r in rows.records:
        values = [r["scores"][s] for s in scorers if r["scores"].get(s) is not None]
        if values:
            ranked.append((stats.mean(values), r["request_id"]))
    ranked.sort()
    return [request_id for _, request_id in ranked[:limit]]


def fetch_examples(
    source: Source, target: str, ranked: list[str], scores: dict[str, dict[str, float | None]]
) -> list[Example]:
    """The ranked pairs' texts, fetched only now: texts are the bulk of the data."""
    if not ranked:
        return []
    rows = source.con.execute(
        "SELECT request_id, started_at, route, model, request_body, primary_text,"
        " candidate_text, primary_tool_calls, candidate_tool_calls, candidate_error"
        " FROM report_pairs WHERE target = ? AND list_contains(?, request_id)",
        [target, ranked],
    ).fetchall()
    by_id = {row[0]: row for row in rows}
    examples = []
    for request_id in ranked:
        rid, started, route, model, body, p_text, c_text, p_tools, c_tools, c_error = by_id[
            request_id
        ]
        examples.append(
            Example(
                request_id=rid,
                started_at=started.isoformat() if started else None,
                route=route,
                model=model,
                request=request_text(body),
                primary_text=p_text,
                candidate_text=c_text,
                primary_tool_calls=None if p_tools is None else str(p_tools),
                candidate_tool_calls=None if c_tools is None else str(c_tools),
                candidate_error=c_error,
                scores=scores[request_id],
            )
        )
    return examples
