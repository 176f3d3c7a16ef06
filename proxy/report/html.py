"""The report as ONE self-contained HTML file: inline CSS and SVG, no script, no network.

Everything stored (prompts, answers, candidate names) is HTML-escaped: the examples are real
traffic and may contain markup, so the page must show it, never run it.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from shadowtap.report.diff import mark_differences
from shadowtap.report.gates import verdict_line
from shadowtap.report.layout import (
    SLICE_COLUMNS,
    format_interval,
    format_number,
    format_percent,
    reliability_rows,
    slice_cells,
)
from shadowtap.report.model import CandidateReport, Example, Report
from shadowtap.report.plots import Series, agreement_histogram, latency_histogram
from shadowtap.report.text import error_control, format_scores, verdict_summary

PRIMARY_COLOUR, CANDIDATE_COLOUR, NOISE_COLOUR = "#4b6cb7", "#e07b39", "#7a7a7a"
EXAMPLE_CHARS = 4000  # per text cell; longer stored texts are cut, and say so

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto;
       max-width: 1200px; padding: 0 16px; color: #1d1d1f; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px; }
h3 { font-size: 15px; margin: 20px 0 6px; color: #333; }
.meta, .note, .empty { color: #666; }
table { border-collapse: collapse; margin: 6px 0 12px; width: 100%; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 8px; text-align: left;
         vertical-align: top; }
th { background: #f5f5f7; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.verdict { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 700;
           font-size: 12px; text-transform: uppercase; }
.pass { background: #d8f3dc; color: #1b5e20; } .fail { background: #fde0dc; color: #b71c1c; }
.insufficient { background: #fff3cd; color: #7a5b00; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; min-width: 240px;
        flex: 1; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
svg { max-width: 100%; height: auto; background: #fcfcfd; border: 1px solid #eee; }
svg .axis { stroke: #888; } svg .grid { stroke: #eee; }
svg .tick, svg .legend, svg .label { font: 11px system-ui, sans-serif; fill: #444; }
svg .threshold { stroke: #b71c1c; stroke-dasharray: 4 3; stroke-width: 1.5; }
table.examples td { width: 25%; }
h4 { font-size: 14px; margin: 14px 0 4px; }
mark.del { background: #fde0dc; color: inherit; } mark.ins { background: #d8f3dc; color: inherit; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; font: 12px/1.4 ui-monospace,
      SFMono-Regular, Menlo, monospace; max-height: 320px; overflow: auto; }
"""


def _e(value: object) -> str:
    return escape("—" if value is None else str(value), quote=True)


def _table(headers: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """Cells are pre-escaped HTML; headers are escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows)
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: object, numeric: bool = False) -> str:
    return f'<td class="num">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def _badge(verdict: str) -> str:
    return f'<span class="verdict {_e(verdict)}">{_e(verdict)}</span>'


def _pre(text: str | None) -> str:
    if text is None:
        return '<td><span class="empty">—</span></td>'
    cut = text[:EXAMPLE_CHARS]
    more = f"\n… ({len(text) - EXAMPLE_CHARS:,} more characters)" if len(text) > len(cut) else ""
    return f"<td><pre>{_e(cut + more)}</pre></td>"


def _gates(c: CandidateReport) -> str:
    rows = []
    for g in c.gates:
        percent = g.gate == "error_rate"
        note = g.note or ""
        if g.verdict == "insufficient" and g.more_pairs is not None:
            note = f"~{g.more_pairs:,} more pairs. {note}"
        rows.append(
            [
                _td(f"{g.gate} [{g.scorer}]" if g.scorer else g.gate),
                _td(format_interval(g.value, percent), True),
                _td(format_interval(g.fixed, percent), True),
                _td(format_percent(g.limit) if percent else format_number(g.limit), True),
                f"<td>{_badge(g.verdict)}</td>",
                _td(note.strip() or ""),
            ]
        )
    headers = ["gate", "measured [anytime interval]", "fixed-n interval", "limit", "verdict"]
    return _table([*headers, "note"], rows)


def _agreement(c: CandidateReport) -> str:
    rows = [
        [
            _td(s.scorer),
            _td(format_interval(s.candidate), True),
            _td(format_interval(s.noise), True),
            _td(format_number(s.threshold), True),
            _td(format_interval(s.under_threshold, True), True),
            _td(format_interval(s.noise_under_threshold, True), True),
        ]
        for s in c.scorers
    ]
    table = _table(
        [
            "scorer",
            "candidate mean",
            "noise floor mean",
            "threshold",
            "candidate under threshold",
            "noise under threshold",
        ],
        rows,
    )
    plots = [
        agreement_histogram(
            s.scorer,
            Series(c.name, s.histogram, CANDIDATE_COLOUR),
            Series("noise floor (secondary)", s.noise_histogram, NOISE_COLOUR),
            s.threshold,
        )
        for s in c.scorers
    ]
    return table + f'<div class="plots">{"".join(plots)}</div>'


def _latency(report: Report, c: CandidateReport) -> str:
    rows = []
    for s in (c.latency, c.ttft):
        rows.append(
            [
                _td("total" if s.metric == "latency_ms" else "time to first token"),
                _td(f"{s.pairs:,}", True),
                *(_td(format_number(s.primary[p], 4), True) for p in ("p50", "p95", "p99")),
                *(_td(format_number(s.candidate[p], 4), True) for p in ("p50", "p95", "p99")),
                _td(format_interval(s.ratio_p50), True),
                _td(format_interval(s.ratio_p95), True),
            ]
        )
    headers = ["measure (ms)", "pairs", "primary p50", "p95", "p99", "candidate p50", "p95"]
    table = _table([*headers, "p99", "ratio p50", "ratio p95"], rows)
    plot = latency_histogram(
        "latency",
        report.latency_edges_ms,
        [
            Series("primary", report.primary_latency_histogram, PRIMARY_COLOUR),
            Series(c.name, c.latency_histogram, CANDIDATE_COLOUR),
        ],
    )
    return table + f'<div class="plots">{plot}</div>'


def _reliability(c: CandidateReport) -> str:
    cells = [[_td(r[0]), _td(r[1], True), _td(r[2], True)] for r in reliability_rows(c)]
    return _table(["measure", "primary", "candidate"], cells)


def _slices(c: CandidateReport) -> str:
    if not c.slices:
        return '<p class="empty">No dimension splits this traffic.</p>'
    rows = [
        [_td(cell, numeric=i > 0) for i, cell in enumerate(slice_cells(row))] for row in c.slices
    ]
    return _table(SLICE_COLUMNS, rows, "slices")


def _examples(c: CandidateReport) -> str:
    if not c.examples:
        return '<p class="empty">No scored pairs.</p>'
    rows = []
    for x in c.examples:
        candidate = x.candidate_text if x.candidate_text is not None else x.candidate_error
        if x.candidate_tool_calls:
            candidate = f"{candidate or ''}\n[tool calls] {x.candidate_tool_calls}"
        primary = x.primary_text
        if x.primary_tool_calls:
            primary = f"{primary or ''}\n[tool calls] {x.primary_tool_calls}"
        scores = format_scores(x.scores)
        meta = f"{x.route or ''} · {x.model or ''} · {x.request_id}\n{scores}"
        rows.append([_pre(x.request), _pre(primary), _pre(candidate), _pre(meta)])
    return _table(["request", "primary", c.name, "where · scores"], rows, "examples")


def _replayed(c: CandidateReport) -> str:
    return f" ({c.replayed_pairs:,} replayed)" if c.replayed_pairs else ""


def _sides(x: Example) -> tuple[str, str]:
    """Each side's answer as one text: its words, then its tool calls, cut to EXAMPLE_CHARS."""
    candidate = x.candidate_text if x.candidate_text is not None else x.candidate_error
    if x.candidate_tool_calls:
        candidate = f"{candidate or ''}\n[tool calls] {x.candidate_tool_calls}"
    primary = x.primary_text
    if x.primary_tool_calls:
        primary = f"{primary or ''}\n[tool calls] {x.primary_tool_calls}"
    return (primary or "")[:EXAMPLE_CHARS], (candidate or "")[:EXAMPLE_CHARS]


def _worst_slices(c: CandidateReport) -> str:
    """The worst slices' most disagreeing pairs, the differing words marked on each side."""
    parts = []
    for row in c.slices:
        if not row.examples:
            continue
        rows = []
        for x in row.examples:
            primary, candidate = mark_differences(*_sides(x))
            meta = f"{x.request_id}\n{format_scores(x.scores)}"
            rows.append(
                [
                    _pre(x.request),
                    f"<td><pre>{primary}</pre></td>",
                    f"<td><pre>{candidate}</pre></td>",
                    _pre(meta),
                ]
            )
        headers = ["request", "primary", c.name, "request id · scores"]
        parts.append(f"<h4>{_e(row.name)}</h4>" + _table(headers, rows, "examples diff"))
    if not parts:
        return '<p class="empty">No slice to show.</p>'
    return "".join(parts)


def _candidate(report: Report, c: CandidateReport) -> str:
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in c.notes)
    return (
        f'<section id="candidate-{_e(c.name)}"><h2>{_e(c.name)} {_badge(c.verdict)} '
        f'<span class="meta">{c.pairs:,} pairs{_replayed(c)}</span></h2>'
        f"<p>{_e(verdict_summary(c))}</p>{notes}"
        f"<h3>Gates</h3>{_gates(c)}"
        f"<h3>Agreement with the primary</h3>{_agreement(c)}"
        f"<h3>Latency</h3>{_latency(report, c)}"
        f"<h3>Reliability, tokens and cost</h3>{_reliability(c)}"
        f"<h3>Where it breaks (worst slices first)</h3>{_slices(c)}"
        f"<h3>Where it breaks: the worst slices' pairs, differences marked</h3>"
        f"{_worst_slices(c)}"
        f"<h3>Most disagreeing pairs (as stored)</h3>{_examples(c)}</section>"
    )


def render_html(report: Report) -> str:
    scope = [report.source, f"generated {report.generated_at.isoformat(timespec='seconds')}"]
    if report.since is not None:
        scope.append(f"since {report.since.isoformat(timespec='minutes')}")
    if report.route is not None:
        scope.append(f"route {report.route}")
    scope.append(f"{report.confidence:.0%} confidence intervals")
    scope.append(error_control(report))
    cards = "".join(
        f'<div class="card"><strong>{_e(c.name)}</strong> {_badge(c.verdict)}'
        f'<div class="meta">{c.pairs:,} pairs</div>'
        + "".join(f"<div>{_e(verdict_line(g))}</div>" for g in c.gates if g.verdict != "pass")
        + "</div>"
        for c in report.candidates.values()
    )
    noise = ""
    if report.noise is not None:
        floor = ", ".join(f"{k} {format_interval(v)}" for k, v in report.noise.scorers.items())
        noise = f"<p>Noise floor (secondary, {report.noise.pairs:,} pairs): {_e(floor)}</p>"
    sections = "".join(_candidate(report, c) for c in report.candidates.values())
    notes = "".join(f'<p class="note">Note: {_e(n)}</p>' for n in report.notes)
    empty = "" if report.candidates else '<p class="empty">No candidate pairs in the selection.</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>shadowtap report</title>'
        f"<style>{CSS}</style></head><body>"
        f'<h1>shadowtap report</h1><p class="meta">{_e(" · ".join(scope))}</p>'
        f'{noise}<div class="cards">{cards}</div>{empty}{sections}{notes}</body></html>'
    )


def write_html(report: Report, path: str | Path) -> None:
    Path(path).write_text(render_html(report), encoding="utf-8")
