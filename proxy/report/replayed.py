"""Candidates answered by `shadowtap replay`: shown beside the live ones, their latency marked.

A replayed answer was timed at replay time, under the load of that moment, while the primary's
latency is from the live request: the latency gate still compares them, but says so instead of
passing the comparison off as a like-for-like one.
"""

from __future__ import annotations

import duckdb
from shadowtap.report.model import CandidateReport

REPLAYED_LATENCY = "replayed: timed at replay time and load, not beside the live primary"


def replayed_pairs(
    con: duckdb.DuckDBPyConnection, relation: str = "report_pairs"
) -> dict[str, int]:
    """How many of each target's selected pairs were answered by a replay."""
    rows = con.execute(
        f"SELECT target, count(*) FILTER (WHERE candidate_source LIKE 'replay%') FROM {relation}"
        " GROUP BY target"
    ).fetchall()
    return {target: int(count) for target, count in rows if count}


def mark_replayed(report: CandidateReport, count: int) -> None:
    report.replayed_pairs = count
    for gate in report.gates:
        if gate.gate == "p95_latency_ratio":
            gate.note = REPLAYED_LATENCY if not gate.note else f"{gate.note}; {REPLAYED_LATENCY}"
    report.notes.append(
        f"{count:,} of {report.pairs:,} pairs were answered by `shadowtap replay`: the"
        " recorded primary answer is the reference, and latency was measured at replay time"
    )
