"""The contents of the reliability and "where it breaks" tables as plain strings, shared by the
terminal and the HTML renderings so both always show the same numbers."""

from __future__ import annotations

from shadowtap.report.model import CandidateReport, SliceRow
from shadowtap.report.stats import Interval

CHECK_LABELS = {
    "empty": "empty answers",
    "invalid_json": "invalid JSON (JSON requested)",
    "schema_invalid": "off the requested JSON schema",
    "invalid_tool_call": "invalid tool calls (unknown tool, bad arguments)",
    "truncated": "cut off by the token limit",
    "refused": "refused",
}
SLICE_COLUMNS = [
    "slice",
    "pairs",
    "agreement drop [interval]",
    "errors",
    "invalid JSON",
    "invalid tool calls",
    "refused",
    "truncated",
    "latency ratio",
]
SHOWN_SLICES = 12  # in the terminal; the HTML shows them all


def format_number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def format_percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def format_interval(value: Interval | None, percent: bool = False) -> str:
    """`0.912 [0.901, 0.922]`, or just the estimate when no interval exists."""
    if value is None or value.estimate is None:
        return "—"
    show = format_percent if percent else format_number
    if value.low is None or value.high is None:
        return f"{show(value.estimate)} (n={value.n})"
    return f"{show(value.estimate)} [{show(value.low)}, {show(value.high)}]"


def reliability_rows(c: CandidateReport) -> list[tuple[str, str, str]]:
    """(measure, primary, candidate): errors, each functional check, tokens and cost."""
    p, k = c.usage_primary, c.usage_candidate
    rows = [
        ("errors (requests the primary answered)", "", format_interval(c.error_rate, True)),
        (
            "errors (all pairs)",
            format_interval(c.primary_error_rate, True),
            format_interval(c.error_rate_all, True),
        ),
    ]
    for check, label in CHECK_LABELS.items():
        rows.append(
            (
                label,
                format_interval(c.reliability_primary.get(check), True),
                format_interval(c.reliability.get(check), True),
            )
        )
    rows += [
        (
            "prompt tokens / 1k requests",
            format_number(p.prompt_tokens),
            format_number(k.prompt_tokens),
        ),
        (
            "completion tokens / 1k requests",
            format_number(p.completion_tokens),
            format_number(k.completion_tokens),
        ),
        ("cost USD / 1k requests", format_number(p.cost_usd), format_number(k.cost_usd)),
    ]
    return rows


def worst_drop(row: SliceRow) -> tuple[str | None, Interval | None]:
    """The scorer whose drop on this slice is surest (highest low end), and that drop."""
    best: tuple[str | None, Interval | None] = (None, None)
    for scorer, value in row.drop.items():
        current = best[1]
        if current is None or (value.low or float("-inf")) > (current.low or float("-inf")):
            best = (scorer, value)
    return best


def slice_cells(row: SliceRow) -> list[str]:
    scorer, drop = worst_drop(row)
    shown = format_interval(drop) + (f" ({scorer})" if scorer and len(row.drop) > 1 else "")
    return [
        row.name,
        f"{row.pairs:,}",
        shown if drop is not None else "—",
        format_interval(row.error_rate, True),
        format_interval(row.reliability.get("invalid_json"), True),
        format_interval(row.reliability.get("invalid_tool_call"), True),
        format_interval(row.reliability.get("refused"), True),
        format_interval(row.reliability.get("truncated"), True),
        format_interval(row.latency_ratio),
    ]
