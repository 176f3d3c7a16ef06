"""Regenerate the figures section of docs/benchmarks.md from `make bench`'s output.

`make bench` leaves each benchmark's printed output in `build/bench/<name>.txt`, and the peer
comparison and the fleet-size report their figures as JSON (`peers.json`, `report_fleet.json`).
This script writes them between the markers below, headed by the date and the machine (cores,
RAM, load average), so no figure in the document is typed by hand.

    .venv/bin/python bench/render.py build/bench docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

START = "<!-- figures:start (written by bench/render.py from `make bench`; do not edit) -->"
END = "<!-- figures:end -->"
# The other benchmarks' printed output, shown as printed, in this order.
TEXT_OUTPUTS = ("overhead", "recorder", "metrics", "replay", "scoring", "embeddings", "abuse")


def commit() -> str:
    """The checkout's commit (`+changes` when the tree differs from it), or `unknown`."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty=+changes"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head or "unknown"


def machine_line(now: datetime, load: tuple[float, float, float] | None = None) -> str:
    memory_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    load = load or os.getloadavg()
    return (
        f"Measured {now:%Y-%m-%d %H:%M} UTC at commit {commit()} on {os.cpu_count()} cores, "
        f"{memory_kb / 1024 / 1024:.1f} GB RAM, load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) when rendered."
    )


def _range(entry: dict[str, float], digits: int = 2, sign: str = "") -> str:
    return (
        f"{entry['median']:{sign}.{digits}f} "
        f"({entry['min']:{sign}.{digits}f} to {entry['max']:{sign}.{digits}f})"
    )


def peers_section(data: dict[str, Any]) -> list[str]:
    rounds = data["args"]["rounds"]
    before, after = data["machine_before"]["load_average"], data["machine_after"]["load_average"]
    lines = [
        "### Peers (`bench/peers.py`)",
        "",
        f"{rounds} rounds; each cell is the median, with the range across rounds; ratios are"
        " per round against the bare floor of the same round (req/CPU: the bare floor's CPU"
        " time per request over the peer's). Load average "
        f"{before[0]:.2f} before, {after[0]:.2f} after.",
        "",
        "| peer | req/s | req/s x bare | CPU ms/req | req per CPU-s x bare | added TTFT ms"
        " | gap widening ms | p95 longest-gap widening ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in data["peers"].items():
        direct = name == "direct"
        lines.append(
            f"| {name} | {s['rps']['median']:.0f} | {'' if direct else _range(s['rps_ratio'])}"
            f" | {'' if direct else format(s['cpu_ms']['median'], '.3f')}"
            f" | {'' if direct else _range(s['cpu_ratio'])}"
            f" | {_range(s['added_ttft_ms'], 3, '+')} | {_range(s['gap_widening_ms'], 3, '+')}"
            f" | {_range(s['max_gap_widening_p95_ms'], 3, '+')} |"
        )
    lines += ["", data["loadgen"] + "."]
    lines += [f"{note}." for note in data.get("notes", [])]
    long = data.get("long_streams")
    if long:
        lines += [
            "",
            f"Long streams: {long['streams']:,} concurrent {long['seconds']:g}-second streams.",
            "",
            "| proxy | completed | RSS idle MB | peak RSS MB | anonymous idle / peak MB |"
            " mapped files idle / peak MB |",
            "|---|---|---|---|---|---|",
        ]
        for name in ("bare", "shadowtap 10%", "shadowtap 10%, recording off"):
            if name not in long:  # recording off: measured since issue 15's hot-path work
                continue
            row = long[name]
            failed = ", ".join(f"{n} {kind}" for kind, n in sorted(row.get("failed", {}).items()))
            lines.append(
                f"| {name} | {row['completed']:,}/{long['streams']:,}"
                f"{f' (not: {failed})' if failed else ''} | {row['idle_mb']:.0f}"
                f" | {row['peak_mb']:.0f} | {split(row)}"
            )
        anonymous = long.get("peak_anon_ratio")
        lines += [
            "",
            f"Peak RSS shadowtap / bare: {long['peak_ratio']:.2f}x; growth over idle RSS"
            f" shadowtap / bare: {long['growth_ratio']:.2f}x"
            + (f"; peak anonymous RSS shadowtap / bare: {anonymous:.2f}x." if anonymous else "."),
        ]
        lines += [f"{note}." for note in long.get("notes", [])]
    prompts = data.get("large_prompts")
    if prompts:
        lines += [
            "",
            f"1 MB prompts, {prompts['concurrency']} at a time:",
            "",
            "| proxy | answered | RSS idle MB | peak RSS MB | growth MB | growth x bare |"
            " anonymous idle / peak MB | mapped files idle / peak MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        names = ("bare", "shadowtap unsampled", "shadowtap sampled")
        for name in (*names, "shadowtap sampled, recording off"):
            if name not in prompts:  # figures from before the case was measured
                continue
            row = prompts[name]
            ratio = f"{row['growth_ratio']:.2f}" if "growth_ratio" in row else ""
            lines.append(
                f"| {name} | {row['answered']} | {row['idle_mb']:.0f} | {row['peak_mb']:.0f}"
                f" | {row['growth_mb']:.0f} | {ratio} | {split(row)}"
            )
    return lines


def split(row: dict[str, Any]) -> str:
    """The anonymous / mapped-files cells of a memory row ("" in figures from before them)."""
    if "peak_anon_mb" not in row:
        return " |  |"
    return (
        f"{row['idle_anon_mb']:.0f} / {row['peak_anon_mb']:.0f} |"
        f" {row['idle_file_mb']:.0f} / {row['peak_file_mb']:.0f} |"
    )


def report_section(data: dict[str, Any]) -> list[str]:
    outcome = data["stopped"] or f"exit status {data['exit']}"
    verdict = "met" if data["met"] else "missed"
    return [
        "### Report at fleet size (`bench/report_fleet.py`)",
        "",
        f"`shadowtap report --parquet` over {data['pairs']:,} synthetic pairs"
        f" ({data['parquet_mb']:.0f} MB of Parquet): {data['seconds']:.1f} s wall,"
        f" peak RSS {data['peak_mb']:.0f} MB, {outcome}; target under 60 s and 2 GB: {verdict}"
        f" (load average {data['load_average'][0]:.2f}).",
    ]


def render(outputs: Path, now: datetime | None = None) -> str:
    """The section's text (markers included) from the files `make bench` left in `outputs`."""
    lines = [START, "", "## Latest figures", "", machine_line(now or datetime.now(UTC)), ""]
    for name, section in (("peers", peers_section), ("report_fleet", report_section)):
        path = outputs / f"{name}.json"
        if path.exists():
            lines += [*section(json.loads(path.read_text())), ""]
    for name in TEXT_OUTPUTS:
        path = outputs / f"{name}.txt"
        if path.exists():
            text = path.read_text().strip().replace("```", "'''")
            lines += [f"### `bench/{name}.py`", "", "```", text, "```", ""]
    return "\n".join([*lines, END]) + "\n"


def replace_section(document: str, section: str) -> str:
    """`document` with its figures section replaced by `section` (appended when absent)."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END) + r"\n?", re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: section, document, count=1)
    return document.rstrip("\n") + "\n\n" + section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", type=Path, help="where make bench left its output")
    parser.add_argument("document", type=Path, help="the Markdown file to update")
    args = parser.parse_args()
    args.document.write_text(replace_section(args.document.read_text(), render(args.outputs)))
    print(f"figures section of {args.document} regenerated from {args.outputs}")


if __name__ == "__main__":
    main()
