"""Which stored scorer is a per-response check (JSON-schema validity, refusal), so that the
examples rank by the comparing scorers only.

Scores are stored under the scorer's configured *name* (`[scorers.schema] type =
"json_schema_valid"` stores "schema"), so the report first works out which stored scorer is
of which type: from the config's [scorers] tables when given, else from the `detail` each type
writes (`valid`; `primary_refused` / `target_refused`), else a name equal to the type.
"""

from __future__ import annotations

from collections.abc import Mapping

from shadowtap.report.sources import Source

JSON_VALIDITY = "json_schema_valid"
REFUSAL = "refusal"

KINDS_SQL = """
SELECT scorer,
       bool_or(json_exists(detail, '$.target_refused')) AS refusal,
       bool_or(json_exists(detail, '$.valid')) AS validity
FROM score_rows WHERE detail IS NOT NULL GROUP BY scorer
"""


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
