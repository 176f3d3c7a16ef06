"""The report in the terminal: rich tables, verdicts first, then the evidence per candidate.

`format_*` helpers are shared with the HTML rendering so both show the same numbers.
"""

from __future__ import annotations

import io

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from shadowtap.report.gates import verdict_line
from shadowtap.report.layout import (
    SHOWN_SLICES,
    SLICE_COLUMNS,
    format_interval,
    format_number,
    format_percent,
    reliability_rows,
    slice_cells,
)
from shadowtap.report.model import CandidateReport, GateResult, Report

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "insufficient": "bold yellow"}
GATE_STYLE = VERDICT_STYLE
EXCERPT = 160  # characters of each example text shown in the terminal


def excerpt(text: str | None, limit: int = EXCERPT) -> str:
    if text is None:
        return "—"
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_scores(scores: dict[str, float | None]) -> str:
    """`similarity 0.41, tool_calls 1` — applicable scores only, in a stable order."""
    return ", ".join(f"{k} {format_number(v)}" for k, v in sorted(scores.items()) if v is not None)


def verdict_summary(candidate: CandidateReport) -> str:
    if candidate.verdict == "fail":
        return "; ".join(verdict_line(g) for g in candidate.gates if g.verdict == "fail")
    if candidate.verdict == "insufficient":
        if not candidate.gates:
            return "no gates configured: nothing to decide"
        open_gates = [g for g in candidate.gates if g.verdict == "insufficient"]
        waiting = [g for g in open_gates if g.reason in ("too_few_pairs", "undecided")]
        missing = [g for g in open_gates if g not in waiting]
        parts = []
        if waiting:
            more = max((g.more_pairs or 0 for g in waiting), default=0)
            estimate = f"~{more:,} more pairs" if more else "more pairs"
            parts.append(f"{estimate} to decide {', '.join(gate_name(g) for g in waiting)}")
        if missing:
            parts.append(
                "no evidence for "
                + ", ".join(
                    f"{gate_name(g)} ({(g.reason or 'no_data').replace('_', ' ')})" for g in missing
                )
            )
        return "; ".join(parts)
    return "every gate's interval clears its limit"


def error_control(report: Report) -> str:
    """What the verdicts promise, in one sentence (README "Gates")."""
    half = (1 - report.confidence) / 2
    return (
        f"Verdicts use anytime-valid intervals: across all {len(report.candidates)} candidates,"
        f" their gates and every re-run, a wrong pass and a wrong fail each have at most a"
        f" {half:.1%} chance."
    )


def gate_name(gate: GateResult) -> str:
    return f"{gate.gate}[{gate.scorer}]" if gate.scorer else gate.gate


def _add_row(table: Table, *cells: str | Text) -> None:
    """Add cells as literal text: stored prompts and `name[scorer]` must not be read as rich
    markup (which would swallow `[...]` or fail on a stray `[/`)."""
    table.add_row(*(Text(c) if isinstance(c, str) else c for c in cells))


def _overview(report: Report) -> Table:
    table = Table(title="Verdicts", title_justify="left", expand=True)
    table.add_column("candidate", style="bold")
    table.add_column("verdict")
    table.add_column("pairs", justify="right")
    table.add_column("why")
    for candidate in report.candidates.values():
        _add_row(
            table,
            candidate.name,
            Text(candidate.verdict.upper(), style=VERDICT_STYLE[candidate.verdict]),
            f"{candidate.pairs:,}",
            verdict_summary(candidate),
        )
    return table


def _gates(candidate: CandidateReport) -> Table:
    table = Table(
        title="Gates (anytime intervals decide; the fixed-n one is for reference)",
        title_justify="left",
    )
    for column in ("gate", "measured [anytime]", "fixed-n", "limit", "verdict", "note"):
        table.add_column(column)
    for gate in candidate.gates:
        name = f"{gate.gate} [{gate.scorer}]" if gate.scorer else gate.gate
        percent = gate.gate == "error_rate"
        note = gate.note or ""
        if gate.verdict == "insufficient" and gate.more_pairs is not None:
            note = f"~{gate.more_pairs:,} more pairs " + note
        _add_row(
            table,
            name,
            format_interval(gate.value, percent),
            format_interval(gate.fixed, percent),
            format_percent(gate.limit) if percent else format_number(gate.limit),
            Text(gate.verdict, style=GATE_STYLE[gate.verdict]),
            note.strip(),
        )
    return table


def _agreement(candidate: CandidateReport) -> Table:
    table = Table(title="Agreement with the primary (1 = same)", title_justify="left")
    for column in ("scorer", "candidate", "noise floor", "threshold", "under (cand / noise)"):
        table.add_column(column)
    for s in candidate.scorers:
        _add_row(
            table,
            s.scorer,
            format_interval(s.candidate),
            format_interval(s.noise),
            format_number(s.threshold),
            f"{format_interval(s.under_threshold, True)} / "
            f"{format_interval(s.noise_under_threshold, True)}",
        )
    return table


def _latency(candidate: CandidateReport) -> Table:
    table = Table(title="Latency (ms, requests both answered)", title_justify="left")
    for column in ("measure", "primary", "candidate", "ratio (same requests)"):
        table.add_column(column)
    for summary in (candidate.latency, candidate.ttft):
        label = "total" if summary.metric == "latency_ms" else "first token"
        ratios = {"p50": summary.ratio_p50, "p95": summary.ratio_p95}
        for point in ("p50", "p95", "p99"):
            _add_row(
                table,
                f"{label} {point} ({summary.pairs:,} pairs)"
                if point == "p50"
                else f"{label} {point}",
                format_number(summary.primary[point], 4),
                format_number(summary.candidate[point], 4),
                format_interval(ratios[point]) if point in ratios else "",
            )
    return table


def _reliability(candidate: CandidateReport) -> Table:
    table = Table(title="Reliability and cost", title_justify="left")
    table.add_column("measure")
    table.add_column("primary")
    table.add_column("candidate")
    for row in reliability_rows(candidate):
        _add_row(table, *row)
    return table


def _slices(candidate: CandidateReport) -> Table:
    shown = candidate.slices[:SHOWN_SLICES]
    more = len(candidate.slices) - len(shown)
    title = "Where it breaks (worst slices first" + (
        f"; {more} more in --json/--html)" if more else ")"
    )
    table = Table(title=title, title_justify="left")
    cells = [slice_cells(row) for row in shown]
    # Columns no slice has a value for (no JSON-mode requests, say) only take width.
    keep = [i for i in range(len(SLICE_COLUMNS)) if i < 3 or any(c[i] != "—" for c in cells)]
    for i in keep:
        table.add_column(SLICE_COLUMNS[i], overflow="fold")
    for row in cells:
        _add_row(table, *(row[i] for i in keep))
    return table


def _examples(candidate: CandidateReport) -> Table:
    table = Table(title="Most disagreeing pairs (as stored)", title_justify="left")
    for column in ("request", "primary", "candidate", "scores"):
        table.add_column(column, overflow="fold")
    for example in candidate.examples:
        _add_row(
            table,
            excerpt(example.request),
            excerpt(example.primary_text),
            excerpt(example.candidate_text or example.candidate_error),
            format_scores(example.scores),
        )
    return table


def candidate_panel(candidate: CandidateReport) -> Panel:
    parts: list[RenderableType] = [
        _gates(candidate),
        _agreement(candidate),
        _latency(candidate),
        _reliability(candidate),
        _slices(candidate),
    ]
    if candidate.examples:
        parts.append(_examples(candidate))
    parts += [Text(f"note: {note}", style="dim") for note in candidate.notes]
    title = Text.assemble(
        (candidate.name, "bold"),
        " — ",
        (candidate.verdict.upper(), VERDICT_STYLE[candidate.verdict]),
        f" — {candidate.pairs:,} pairs",
        f" ({candidate.replayed_pairs:,} replayed)" if candidate.replayed_pairs else "",
    )
    return Panel(Group(*parts), title=title, title_align="left")


def print_report(report: Report, console: Console) -> None:
    scope = [report.source]
    if report.since is not None:
        scope.append(f"since {report.since.isoformat(timespec='minutes')}")
    if report.route is not None:
        scope.append(f"route {report.route}")
    scope.append(f"{report.confidence:.0%} intervals")
    console.print(
        Text("shadowtap report", style="bold"), Text("· " + " · ".join(scope)), soft_wrap=True
    )
    console.print(Text(error_control(report), style="dim"), soft_wrap=True)
    if report.noise is not None:
        floor = ", ".join(f"{k} {format_interval(v)}" for k, v in report.noise.scorers.items())
        console.print(
            Text(f"Noise floor (secondary, {report.noise.pairs:,} pairs): {floor or '—'}")
        )
    if not report.candidates:
        console.print("No candidate pairs in the selection.")
    else:
        console.print(_overview(report))
        for candidate in report.candidates.values():
            console.print(candidate_panel(candidate))
    for note in report.notes:
        console.print(Text(f"note: {note}", style="dim"))


def render_text(report: Report, width: int = 120) -> str:
    """The terminal report as plain text (no colour codes), e.g. for a file or a log."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    print_report(report, console)
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()
