"""Per-target measures the report is built from: pairs as numpy columns, histograms, examples.

Kept apart from `build` so that module reads as the report's recipe, and these as its parts.
"""

from __future__ import annotations

import json
import math
from typing import Any

import duckdb
import numpy as np
from shadowtap.report import stats
from shadowtap.report.answer_checks import check_sql
from shadowtap.report.model import Example, Usage
from shadowtap.report.reliability import CHECKS
from shadowtap.report.selection import Selection
from shadowtap.report.sources import UNSCORED, Source

HISTOGRAM_BINS = 20
LATENCY_BINS = 30
SIDES = ("primary", "candidate")


class Pairs:
    """One target's selected pairs (`report_pairs`): counts from SQL, columns as numpy arrays.

    A shadow that was never sent (no faithful translation for its target: `not sent: ...`)
    is no pair: the candidate did not fail, it was not asked, so it is left out (and counted
    in `not_sent`). Columns are read in request order (`report_pairs`' order), so a bootstrap
    over them draws the same pairs on every run."""

    def __init__(self, con: duckdb.DuckDBPyConnection, target: str, selection: Selection) -> None:
        self.con, self.target, self.selection = con, target, selection
        found = self._one(
            "SELECT count(*) FILTER (WHERE sent), count(*) FILTER (WHERE NOT sent)"
            " FROM report_pairs WHERE target = $target"
        )
        self.n, self.not_sent = int(found[0]), int(found[1])
        self._means: dict[tuple[str, float], stats.Interval] = {}
        self._scorers: set[str] | None = None
        self._last: tuple[str, np.ndarray] | None = None  # the last scorer's scores

    def _one(self, sql: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
        row = self.con.execute(sql, {"target": self.target, **(params or {})}).fetchone()
        assert row is not None  # an aggregate without GROUP BY has one row
        return row

    def column(self, sql: str, condition: str = "true", **params: Any) -> np.ndarray:
        """One numeric expression over the sent pairs where `condition` holds, as float64."""
        found = self.con.execute(
            f"SELECT CAST({sql} AS DOUBLE) AS v FROM report_pairs"
            f" WHERE target = $target AND sent AND ({condition})",
            {"target": self.target, **params},
        ).fetchnumpy()["v"]
        return np.asarray(found, dtype=np.float64)

    def count(self, condition: str, **params: Any) -> int:
        """How many sent pairs satisfy `condition`."""
        return int(
            self._one(
                "SELECT count(*) FROM report_pairs"
                f" WHERE target = $target AND sent AND ({condition})",
                params,
            )[0]
        )

    def __len__(self) -> int:
        return self.n

    def mean(self, scorer: str, confidence: float, target: str) -> stats.Interval:
        """Bootstrap interval of a scorer's mean, computed once: the secondary's is shown
        beside every candidate."""
        key = (scorer, confidence)
        if key not in self._means:
            label = f"{target}:{scorer}:mean"
            self._means[key] = stats.bootstrap_mean(self.scores(scorer), confidence, label)
        return self._means[key]

    def scores(self, scorer: str) -> np.ndarray:
        if self._last is None or self._last[0] != scorer:
            column = self.selection.score(scorer)
            values = self.column(column, f"{column} IS NOT NULL")
            self._last = (scorer, values)
        return self._last[1]

    def scorers(self) -> set[str]:
        if self._scorers is None:
            self._scorers = present_scorers(self, "true")
        return self._scorers

    def paired(self, column: str, *, both_ok: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(candidate, primary) values of `column` on the same requests."""
        condition = f"candidate_{column} IS NOT NULL AND primary_{column} IS NOT NULL"
        if both_ok:
            condition += " AND primary_ok AND candidate_ok"
        found = self.con.execute(
            f"SELECT CAST(candidate_{column} AS DOUBLE) AS c, CAST(primary_{column} AS DOUBLE)"
            f" AS p FROM report_pairs WHERE target = $target AND sent AND {condition}",
            {"target": self.target},
        ).fetchnumpy()
        return np.asarray(found["c"], dtype=np.float64), np.asarray(found["p"], dtype=np.float64)

    def check_counts(self, side: str) -> dict[str, tuple[int, int]]:
        """check -> (broken, applicable) over `side`'s answers on every pair of the target
        (sent or not: a shadow not sent still has the primary's answer)."""
        parts = ", ".join(
            f"count(*) FILTER (WHERE {check_sql(side, name)}), count({check_sql(side, name)})"
            for name in CHECKS
        )
        row = self._one(f"SELECT {parts} FROM report_pairs WHERE target = $target")
        return {name: (int(row[2 * i]), int(row[2 * i + 1])) for i, name in enumerate(CHECKS)}


def present_scorers(pairs: Pairs, where: str, **params: Any) -> set[str]:
    """The scorers with a row for any of the sent pairs `where` selects (a number or not)."""
    names = list(pairs.selection.columns)
    if not names:
        return set()
    parts = ", ".join(f"bool_or({pairs.selection.scored(n)})" for n in names)
    row = pairs._one(
        f"SELECT {parts} FROM report_pairs WHERE target = $target AND sent AND ({where})", params
    )
    return {name for name, found in zip(names, row, strict=True) if found}


def usage(pairs: Pairs, side: str) -> Usage:
    """Tokens and cost per 1,000 requests: averages over the sent pairs that report them."""
    columns = ("prompt_tokens", "completion_tokens", "cost_usd")
    parts = ", ".join(f"1000 * fsum({side}_{c}) / nullif(count({side}_{c}), 0)" for c in columns)
    row = pairs._one(f"SELECT {parts} FROM report_pairs WHERE target = $target AND sent")
    return Usage(*(None if v is None else float(v) for v in row))


def score_histogram(values: np.ndarray) -> list[int]:
    if len(values) == 0:
        return [0] * HISTOGRAM_BINS
    bins = np.clip((np.asarray(values) * HISTOGRAM_BINS).astype(np.int64), 0, HISTOGRAM_BINS - 1)
    return [int(v) for v in np.bincount(bins, minlength=HISTOGRAM_BINS)]


def latency_edges(low_value: float | None, high_value: float | None) -> list[float]:
    """Log-spaced bin edges spanning every latency seen (latencies are right-skewed), from the
    smallest and largest positive latency."""
    if low_value is None or high_value is None:
        return []
    low, high = math.log10(low_value), math.log10(high_value)
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    step = (high - low) / LATENCY_BINS
    return [10 ** (low + i * step) for i in range(LATENCY_BINS + 1)]


def latency_histogram_sql(values_sql: str, edges: list[float]) -> str:
    """SQL counting the positive values of `values_sql` (a query with column `v`) per bin."""
    bins = len(edges) - 1
    low, high = math.log10(edges[0]), math.log10(edges[-1])
    position = f"floor((log10(v) - {low!r}) / {high - low!r} * {bins})"
    return (
        f"SELECT least({bins - 1}, greatest(0, CAST({position} AS BIGINT))) AS bin, count(*)"
        f" FROM ({values_sql}) WHERE v > 0 GROUP BY bin"
    )


def latency_histogram(
    con: duckdb.DuckDBPyConnection, values_sql: str, edges: list[float], params: dict[str, Any]
) -> list[int]:
    counts = [0] * max(0, len(edges) - 1)
    if not counts:
        return counts
    for index, count in con.execute(latency_histogram_sql(values_sql, edges), params).fetchall():
        counts[int(index)] = int(count)
    return counts


def share_under(
    values: np.ndarray, threshold: float | None, confidence: float
) -> stats.Interval | None:
    if threshold is None or len(values) == 0:
        return None
    return stats.wilson(int(np.count_nonzero(values < threshold)), len(values), confidence)


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


def rank_disagreeing(
    pairs: Pairs, scorers: list[str], limit: int, where: str = "true", **params: Any
) -> list[str]:
    """The `limit` sent pairs (of those `where` selects) with the lowest mean of `scorers`'
    scores, ties by request: an ORDER BY ... LIMIT in DuckDB."""
    if not scorers or limit <= 0:
        return []
    values = [pairs.selection.score(name) for name in scorers]
    total = " + ".join(f"coalesce({v}, 0)" for v in values)
    present = " + ".join(f"CAST({v} IS NOT NULL AS INTEGER)" for v in values)
    rows = pairs.con.execute(
        f"SELECT request_id FROM (SELECT request_id, ({total}) / nullif({present}, 0) AS m"
        f" FROM report_pairs WHERE target = $target AND sent AND ({where}))"
        f" WHERE m IS NOT NULL ORDER BY m, request_id LIMIT {int(limit)}",
        {"target": pairs.target, **params},
    ).fetchall()
    return [request_id for (request_id,) in rows]


def fetch_examples(pairs: Pairs, source: Source, ranked: list[str]) -> list[Example]:
    """The ranked pairs' texts, read from the source only now (texts are the bulk of the data,
    and `report_pairs` holds none), with their scores. The ids are constants of the query, so
    DuckDB prunes the scans to them (row groups of time-ordered request ids)."""
    if not ranked:
        return []
    target, selection = pairs.target, pairs.selection
    relation = UNSCORED if source.has_score_rows else "pairs"  # scores: from report_pairs
    ids = {f"id{i}": request_id for i, request_id in enumerate(ranked)}
    rows = source.con.execute(
        "SELECT request_id, started_at, route, model, request_body, primary_text,"
        " candidate_text, primary_tool_calls, candidate_tool_calls, candidate_error"
        f" FROM {relation} WHERE target = $target"
        f" AND request_id IN ({', '.join(f'${name}' for name in ids)})",
        {"target": target, **ids},
    ).fetchall()
    names = list(selection.columns)
    columns = "".join(f", {selection.scored(n)}, {selection.score(n)}" for n in names)
    scores = {
        row[0]: {name: row[2 + 2 * i] for i, name in enumerate(names) if row[1 + 2 * i]}
        for row in source.con.execute(
            f"SELECT request_id{columns} FROM report_pairs WHERE target = $target"
            " AND request_id IN (SELECT unnest($ids))",
            {"target": target, "ids": ranked},
        ).fetchall()
    }
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
