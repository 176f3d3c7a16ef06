"""`shadowtap report`: turn recorded pairs into a swap decision with honest intervals.

Never imported by the proxy's hot path; `proxy.cli` imports `proxy.report.command` lazily.

    from proxy.report import build_report, open_db, render_text
    report = build_report(open_db("shadowtap.duckdb"), GatesConfig())
    print(render_text(report))
"""

from proxy.report.build import build_report
from proxy.report.html import render_html, write_html
from proxy.report.model import Report, report_json
from proxy.report.sources import (
    Source,
    SourceError,
    fetch_pairs,
    from_pair_rows,
    open_db,
    open_parquet,
    open_path,
    open_url,
)
from proxy.report.text import print_report, render_text

__all__ = [
    "Report",
    "Source",
    "SourceError",
    "build_report",
    "fetch_pairs",
    "from_pair_rows",
    "open_db",
    "open_parquet",
    "open_path",
    "open_url",
    "print_report",
    "render_html",
    "render_text",
    "report_json",
    "write_html",
]
