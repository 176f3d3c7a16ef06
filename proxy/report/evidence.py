"""Why a gate has no evidence: one target's rows of one scorer, counted by outcome.

A scorer can leave a target without a single usable score in three ways, which the report keeps
apart because each has its own fix: it stored no row at all (not configured when those pairs
were scored, or a typo in `gates.scorers`), it raised on every pair (`scores.error`), or it did
not apply (`score` NULL: json_match on prose answers, a judge over its budget).

Example: `missing_scores(source, pairs, "small", "similarity").note` ->
`"similarity raised on all 212 pairs of small (scorer errors)"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shadowtap.report.measures import Pairs
from shadowtap.report.model import Reason
from shadowtap.report.sources import Source

# Counts over the report's selected requests only (report_pairs), like every other measure.
EVIDENCE_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE s.error IS NOT NULL),
       count(*) FILTER (WHERE s.error IS NULL AND s.score IS NULL)
FROM score_rows AS s
SEMI JOIN (SELECT request_id FROM report_pairs WHERE target = $target) AS p
    ON p.request_id = s.request_id
WHERE s.target = $target AND s.scorer = $scorer
"""


@dataclass(frozen=True, slots=True)
class Missing:
    reason: Reason
    note: str


def missing_scores(source: Source, pairs: Pairs, target: str, scorer: str) -> Missing:
    """Why `target` has no numeric `scorer` score in the selection (call it only then)."""
    if source.has_score_rows:
        found = source.con.execute(EVIDENCE_SQL, {"target": target, "scorer": scorer}).fetchone()
        total, errors, not_applicable = found if found is not None else (0, 0, 0)
    else:
        # The live API returns pairs only: a NULL in the scores map is an error or "not
        # applicable", which it cannot tell apart.
        total = pairs.count(pairs.selection.scored(scorer))
        errors, not_applicable = 0, 0
        if total:
            return Missing(
                "not_applicable",
                f"{scorer} has no numeric score on any of {total:,} pairs of {target}"
                " (the scorer raised or did not apply; --db or --parquet tell which)",
            )
    if total == 0:
        return Missing(
            "no_rows",
            f"{scorer} stored no score for {target} in the selection"
            " (not configured when these pairs were scored, or a typo in gates.scorers)",
        )
    if errors and not not_applicable:
        return Missing("scorer_errors", f"{scorer} raised on all {total:,} pairs of {target}")
    if not_applicable and not errors:
        return Missing(
            "not_applicable", f"{scorer} did not apply to any of {total:,} pairs of {target}"
        )
    return Missing(
        "scorer_errors",
        f"{scorer} raised on {errors:,} and did not apply to {not_applicable:,}"
        f" of {total:,} pairs of {target}",
    )
