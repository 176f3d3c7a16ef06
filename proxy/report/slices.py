"""Where it breaks: the traffic cut into slices, each measured like the whole.

A swap rarely goes wrong on average; it goes wrong on the requests where the candidate breaks
(tool calls, JSON mode, long conversations, one route). Every request gets one value per
dimension, computed once in DuckDB from the stored request (`report_requests`):

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
from typing import Any

from shadowtap.report.sources import Source

MAX_VALUES = 20
BUILT_IN = ("route", "model", "stream", "tools", "structured", "prompt_tokens", "turns")
VALUE_CHARS = 64
PROMPT_BUCKETS = ((500, "<500"), (2_000, "500-2k"), (8_000, "2k-8k"), (None, "8k+"))
TURN_BUCKETS = ((2, "1"), (4, "2-3"), (10, "4-9"), (None, "10+"))  # exclusive upper ends

REQUESTS_SQL = """
CREATE OR REPLACE TEMPORARY TABLE report_requests AS
SELECT request_id,
    any_value(route) AS route,
    any_value(model) AS model,
    any_value(stream) AS stream,
    any_value(coalesce(json_array_length(request_body, '$.tools'), 0) > 0) AS tools,
    any_value(CASE WHEN coalesce(request_body->>'$.response_format.type',
                                 request_body->>'$.text.format.type')
                        IN ('json_object', 'json_schema')
                   THEN coalesce(request_body->>'$.response_format.type',
                                 request_body->>'$.text.format.type') END) AS json_mode,
    any_value(coalesce(primary_prompt_tokens,
                       length(CAST(request_body AS VARCHAR)) // 4)) AS prompt_tokens,
    any_value(coalesce(json_array_length(request_body, '$.messages'),
                       json_array_length(request_body, '$.input'),
                       CASE WHEN json_type(request_body, '$.input') = 'VARCHAR' THEN 1 END))
        AS turns,
    any_value(CASE WHEN json_array_length(request_body, '$.tools') > 0
                   THEN CAST(request_body->'$.tools' AS VARCHAR) END) AS tools_json,
    any_value(CAST(coalesce(request_body->'$.response_format.json_schema.schema',
                            request_body->'$.text.format.schema') AS VARCHAR)) AS schema_json
    {custom}
FROM report_pairs GROUP BY request_id
"""


@dataclass(frozen=True, slots=True)
class SliceKey:
    dimension: str
    value: str

    def __str__(self) -> str:
        return f"{self.dimension}={self.value}"


def _json_path(spec: str) -> str:
    """`metadata.feature` -> `$."metadata"."feature"` (segments are validated by the config)."""
    return "$." + ".".join(f'"{segment}"' for segment in spec.split("."))


def prepare(source: Source, slice_by: Sequence[str]) -> list[str]:
    """Create `report_requests` over the selected pairs; returns the dimension names."""
    custom, params = [], {}
    for i, spec in enumerate(slice_by):
        kind, _, name = spec.partition(":")
        column = "request_body" if kind == "body" else "slice_headers"
        path = _json_path(name) if kind == "body" else f'$."{name.lower()}"'
        params[f"path{i}"] = path
        custom.append(f", any_value(json_extract_string({column}, $path{i})) AS custom{i}")
    source.con.execute(REQUESTS_SQL.format(custom="\n    ".join(custom)), params)
    return [*BUILT_IN, *slice_by]


def _bucket(value: int | None, buckets: tuple[tuple[int | None, str], ...]) -> str:
    if value is None:
        return "unknown"
    for upper, label in buckets:
        if upper is None or value < upper:
            return label
    return buckets[-1][1]


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _text(value: Any) -> str:
    if value is None:
        return "(none)"
    text = " ".join(str(value).split())
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def request_values(source: Source, dimensions: list[str]) -> dict[str, tuple[str, ...]]:
    """request_id -> its value on every dimension (in `dimensions`' order)."""
    customs = ", ".join(f"custom{i}" for i in range(len(dimensions) - len(BUILT_IN)))
    rows = source.con.execute(
        "SELECT request_id, route, model, stream, tools, json_mode, prompt_tokens, turns"
        + (f", {customs}" if customs else "")
        + " FROM report_requests"
    ).fetchall()
    values: dict[str, tuple[str, ...]] = {}
    for request_id, route, model, stream, tools, mode, prompt, turns, *extra in rows:
        values[request_id] = (
            _text(route),
            _text(model),
            _yes_no(stream),
            _yes_no(tools),
            mode or "none",
            _bucket(prompt, PROMPT_BUCKETS),
            _bucket(turns, TURN_BUCKETS),
            *(_text(v) for v in extra),
        )
    return _capped(values, len(dimensions))


def _capped(values: dict[str, tuple[str, ...]], width: int) -> dict[str, tuple[str, ...]]:
    """Keep each dimension's MAX_VALUES most frequent values; pool the rest as "(other)"."""
    kept: list[set[str]] = []
    for d in range(width):
        counts: dict[str, int] = defaultdict(int)
        for row in values.values():
            counts[row[d]] += 1
        ranked = sorted(counts, key=lambda v: (-counts[v], v))
        kept.append(set(ranked[:MAX_VALUES]))
    return {
        request_id: tuple(v if v in kept[d] else "(other)" for d, v in enumerate(row))
        for request_id, row in values.items()
    }


def slices_of(
    dimensions: list[str], values: dict[str, tuple[str, ...]]
) -> dict[SliceKey, set[str]]:
    """Every non-trivial slice (its dimension has two values or more) -> its request ids."""
    members: dict[SliceKey, set[str]] = defaultdict(set)
    for request_id, row in values.items():
        for dimension, value in zip(dimensions, row, strict=True):
            members[SliceKey(dimension, value)].add(request_id)
    per_dimension: dict[str, int] = defaultdict(int)
    for key in members:
        per_dimension[key.dimension] += 1
    return {key: ids for key, ids in members.items() if per_dimension[key.dimension] > 1}
