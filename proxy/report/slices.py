"""Where it breaks: the traffic cut into slices, each measured like the whole.

A swap rarely goes wrong on average; it goes wrong on the requests where the candidate breaks
(tool calls, JSON mode, long conversations, one route). Every request gets one value per
dimension, computed once in DuckDB from the stored request (`shadowtap.report.selection`
builds them into `report_pairs`), and every slice is measured by a GROUP BY there:

- `route`, `model` (as requested), `stream`;
- `tools`: the request declared tools; `structured`: it asked for JSON (json_object /
  json_schema, chat or Responses API);
- `prompt_tokens`: the primary's prompt tokens (else the body's length / 4), bucketed;
- `turns`: messages (or Responses `input` items) in the request, bucketed;
- each `[report] slice_by` entry: `body:<dotted.path>` (a field of the request body) or
  `header:<name>` (a request header whose values the proxy stores for this purpose only).

A dimension with a single value says nothing the average does not; it is left out. The
`MAX_VALUES` most frequent values of a dimension are kept, the rest pooled as "(other)".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from shadowtap.report.sources import Source

MAX_VALUES = 20
BUILT_IN = ("route", "model", "stream", "tools", "structured", "prompt_tokens", "turns")
VALUE_CHARS = 64
PROMPT_BUCKETS = ((500, "<500"), (2_000, "500-2k"), (8_000, "2k-8k"), (None, "8k+"))
TURN_BUCKETS = ((2, "1"), (4, "2-3"), (10, "4-9"), (None, "10+"))  # exclusive upper ends


@dataclass(frozen=True, slots=True)
class SliceKey:
    dimension: str
    value: str

    def __str__(self) -> str:
        return f"{self.dimension}={self.value}"


def json_path(spec: str) -> str:
    """`metadata.feature` -> `$."metadata"."feature"` (segments are validated by the config)."""
    return "$." + ".".join(f'"{segment}"' for segment in spec.split("."))


@dataclass(frozen=True, slots=True)
class Dimension:
    """One dimension that splits the selection: its `report_pairs` column and kept values."""

    name: str
    column: str
    kept: tuple[str, ...]  # the MAX_VALUES most frequent values, most frequent first
    pooled: bool  # more values than that: the rest are "(other)"

    @property
    def values(self) -> tuple[str, ...]:
        return (*self.kept, OTHER) if self.pooled else self.kept

    def value_sql(self) -> str:
        """The slice value of a `report_pairs` row on this dimension ("(other)" pooled)."""
        if not self.pooled:
            return self.column
        kept = ", ".join("'" + v.replace("'", "''") + "'" for v in self.kept)
        return f"(CASE WHEN {self.column} IN ({kept}) THEN {self.column} ELSE '{OTHER}' END)"


OTHER = "(other)"

# Each request's values (report_pairs repeats them on every target's row), one row per
# request and dimension, counted; the most frequent MAX_VALUES of each dimension kept.
VALUES_SQL = """
WITH requests AS (SELECT DISTINCT request_id, {columns} FROM report_pairs),
counted AS (
    SELECT dimension, value, count(*) AS n
    FROM (UNPIVOT requests ON {columns} INTO NAME dimension VALUE value)
    GROUP BY dimension, value
)
SELECT dimension, value, count(*) OVER (PARTITION BY dimension) AS distinct_values
FROM counted
QUALIFY row_number() OVER (PARTITION BY dimension ORDER BY n DESC, value) <= {limit}
ORDER BY dimension, n DESC, value
"""


def split_by(source: Source, names: Sequence[str], columns: Sequence[str]) -> list[Dimension]:
    """The dimensions that split the selected requests (two values or more), in `names`'
    order, with the values they keep."""
    rows = source.con.execute(
        VALUES_SQL.format(columns=", ".join(columns), limit=MAX_VALUES)
    ).fetchall()
    kept: dict[str, list[str]] = defaultdict(list)
    distinct: dict[str, int] = {}
    for column, value, count in rows:
        kept[column].append(value)
        distinct[column] = count
    out = []
    for name, column in zip(names, columns, strict=True):
        dimension = Dimension(
            name, column, tuple(kept[column]), distinct.get(column, 0) > MAX_VALUES
        )
        if len(dimension.values) > 1:
            out.append(dimension)
    return out
