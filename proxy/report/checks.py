"""Per-response checks: JSON-schema validity and refusals, for the candidate and the primary.

Scores are stored under the scorer's configured *name* (`[scorers.schema] type =
"json_schema_valid"` stores "schema"), so the report first works out which stored scorer is
of which type: from the config's [scorers] tables when given, else from the `detail` each type
writes (`valid`; `primary_refused` / `target_refused`), else a name equal to the type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shadowtap.report import stats
from shadowtap.report.sources import Source
from shadowtap.report.stats import Interval

JSON_VALIDITY = "json_schema_valid"
REFUSAL = "refusal"
PER_RESPONSE_TYPES = (JSON_VALIDITY, REFUSAL)

KINDS_SQL = """
SELECT scorer,
       bool_or(json_exists(detail, '$.target_refused')) AS refusal,
       bool_or(json_exists(detail, '$.valid')) AS validity
FROM score_rows WHERE detail IS NOT NULL GROUP BY scorer
"""

# Counts per side for one target, over the report's selected requests only.
CHECKS_SQL = """
SELECT
    count(*) FILTER (WHERE s.target = $target AND s.scorer = $validity AND s.score IS NOT NULL),
    count(*) FILTER (WHERE s.target = $target AND s.scorer = $validity AND s.score >= 0.5),
    count(*) FILTER (WHERE s.target = 'primary' AND s.scorer = $validity
                     AND s.score IS NOT NULL),
    count(*) FILTER (WHERE s.target = 'primary' AND s.scorer = $validity AND s.score >= 0.5),
    count(*) FILTER (WHERE s.target = $target AND s.scorer = $refusal
                     AND json_exists(s.detail, '$.target_refused')),
    count(*) FILTER (WHERE s.target = $target AND s.scorer = $refusal
                     AND s.detail->>'$.target_refused' = 'true'),
    count(*) FILTER (WHERE s.target = $target AND s.scorer = $refusal
                     AND s.detail->>'$.primary_refused' = 'true')
FROM score_rows AS s
SEMI JOIN (SELECT request_id FROM report_pairs WHERE target = $target) AS p
    ON p.request_id = s.request_id
"""


@dataclass(slots=True)
class Checks:
    json_valid: Interval | None = None
    json_valid_primary: Interval | None = None
    refusal_rate: Interval | None = None
    refusal_rate_primary: Interval | None = None


def scorer_kinds(source: Source, declared: Mapping[str, str] | None) -> dict[str, str]:
    """Stored scorer name -> type, for the types the report treats specially."""
    kinds: dict[str, str] = {}
    if source.has_score_rows:
        for scorer, refusal, validity in source.con.execute(KINDS_SQL).fetchall():
            if refusal:
                kinds[scorer] = REFUSAL
            elif validity:
                kinds[scorer] = JSON_VALIDITY
    for name, kind in (declared or {}).items():
        kinds[name] = kind
    return kinds


def named(kinds: Mapping[str, str], kind: str, present: set[str]) -> str | None:
    """The stored scorer of `kind`: the one the kinds say, else one named like the type."""
    for name, value in kinds.items():
        if value == kind and name in present:
            return name
    return kind if kind in present and kinds.get(kind, kind) == kind else None


def response_checks(
    source: Source, target: str, kinds: Mapping[str, str], present: set[str], confidence: float
) -> Checks:
    """Wilson intervals of validity and refusal rates from the per-score rows, when stored."""
    validity, refusal = named(kinds, JSON_VALIDITY, present), named(kinds, REFUSAL, present)
    if not source.has_score_rows or (validity is None and refusal is None):
        return Checks()
    row = source.con.execute(
        CHECKS_SQL,
        {"target": target, "validity": validity or "", "refusal": refusal or ""},
    ).fetchone()
    assert row is not None
    valid_n, valid_ok, primary_n, primary_ok, refusal_n, refused, primary_refused = row

    def rate(hits: int, n: int) -> Interval | None:
        return stats.wilson(hits, n, confidence) if n else None

    return Checks(
        json_valid=rate(valid_ok, valid_n),
        json_valid_primary=rate(primary_ok, primary_n),
        refusal_rate=rate(refused, refusal_n),
        refusal_rate_primary=rate(primary_refused, refusal_n),
    )
