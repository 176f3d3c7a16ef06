"""Inline SVG plots for the HTML report: no script, no fonts or images to fetch.

Series are drawn as shares of their own sample (not counts), so a candidate with 400 pairs
and a noise floor with 120 compare fairly on one axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 14, 40
NICE_MS = (1, 2, 5)


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    counts: list[int]
    colour: str


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0] * len(counts)


def _frame(title: str, body: list[str], legend: list[Series]) -> str:
    items = []
    x = LEFT
    for series in legend:
        items.append(
            f'<rect x="{x}" y="2" width="10" height="10" fill="{series.colour}" '
            f'fill-opacity="0.6"/><text x="{x + 14}" y="11" class="legend">'
            f"{escape(series.label)}</text>"
        )
        x += 24 + 7 * len(series.label)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 14}" '
        f'width="{WIDTH}" height="{HEIGHT + 14}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f"{''.join(items)}"
        f'<g transform="translate(0, 14)">{"".join(body)}</g></svg>'
    )


def _axes(y_max: float, x_label: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}" class="axis"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" class="axis"/>',
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" class="label" '
        f'text-anchor="middle">{escape(x_label)}</text>',
    ]
    for fraction in (0.5, 1.0):
        y = HEIGHT - BOTTOM - plot_h * fraction
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{100 * y_max * fraction:.0f}%</text>"
        )
    return parts


def _bars(series: list[Series], y_max: float) -> list[str]:
    """Overlaid translucent bars, one set per series, over equal-width bins."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = []
    for s in series:
        shares = _shares(s.counts)
        width = plot_w / max(len(shares), 1)
        for i, share in enumerate(shares):
            if share <= 0:
                continue
            height = plot_h * share / y_max
            parts.append(
                f'<rect x="{LEFT + i * width:.1f}" y="{HEIGHT - BOTTOM - height:.1f}" '
                f'width="{max(width - 1, 1):.1f}" height="{height:.1f}" fill="{s.colour}" '
                f'fill-opacity="0.55"><title>{escape(s.label)}: {100 * share:.1f}%</title></rect>'
            )
    return parts


def _y_max(series: list[Series]) -> float:
    peak = max((max(_shares(s.counts), default=0.0) for s in series), default=0.0)
    return min(1.0, max(peak * 1.1, 0.01))  # headroom above the tallest bar, never past 100%


def agreement_histogram(
    scorer: str, candidate: Series, noise: Series | None, threshold: float | None
) -> str:
    """Scores in [0, 1] of the candidate beside the noise floor, threshold marked."""
    series = [candidate]
    if noise is not None and any(noise.counts):
        series.append(noise)
    y_max = _y_max(series)
    body = _axes(y_max, f"{scorer} score (1 = agrees with the primary)") + _bars(series, y_max)
    plot_w = WIDTH - LEFT - RIGHT
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = LEFT + plot_w * value
        body.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" class="tick" '
            f'text-anchor="middle">{value:g}</text>'
        )
    if threshold is not None and 0 <= threshold <= 1:
        x = LEFT + plot_w * threshold
        body.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" '
            f'class="threshold"><title>threshold {threshold:g}</title></line>'
        )
    return _frame(f"{scorer}: candidate vs noise floor", body, series)


def latency_histogram(metric: str, edges_ms: list[float], series: list[Series]) -> str:
    """Latency distributions on a log axis (latencies are right-skewed)."""
    series = [s for s in series if sum(s.counts)]
    if len(edges_ms) < 2 or not series:
        return '<p class="empty">No latency data.</p>'
    y_max = _y_max(series)
    body = _axes(y_max, f"{metric} (ms, log scale)") + _bars(series, y_max)
    low, high = math.log10(edges_ms[0]), math.log10(edges_ms[-1])
    plot_w = WIDTH - LEFT - RIGHT
    decade = math.floor(low)
    while decade <= math.ceil(high):
        for step in NICE_MS:
            value = step * 10**decade
            position = (math.log10(value) - low) / (high - low)
            if 0 <= position <= 1:
                x = LEFT + plot_w * position
                label = f"{value / 1000:g}s" if value >= 1000 else f"{value:g}"
                body.append(
                    f'<line x1="{x:.1f}" y1="{HEIGHT - BOTTOM}" x2="{x:.1f}" '
                    f'y2="{HEIGHT - BOTTOM + 4}" class="axis"/>'
                    f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" class="tick" '
                    f'text-anchor="middle">{label}</text>'
                )
        decade += 1
    return _frame(f"{metric} distribution", body, series)
