"""`shadowtap report`: turn recorded pairs into a swap decision with honest intervals.

Never imported by the proxy's hot path. Names load on first use (PEP 562), so that building the
CLI parser (which imports `shadowtap.report.command` for its arguments) costs `serve` nothing.

    from shadowtap.report import build_report, open_db, render_text
    report = build_report(open_db("shadowtap.duckdb"), GatesConfig())
    print(render_text(report))
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Report": "shadowtap.report.model",
    "report_json": "shadowtap.report.model",
    "build_report": "shadowtap.report.build",
    "render_html": "shadowtap.report.html",
    "write_html": "shadowtap.report.html",
    "print_report": "shadowtap.report.text",
    "render_text": "shadowtap.report.text",
    "Source": "shadowtap.report.sources",
    "SourceError": "shadowtap.report.sources",
    "fetch_pairs": "shadowtap.report.sources",
    "from_pair_rows": "shadowtap.report.sources",
    "open_db": "shadowtap.report.sources",
    "open_parquet": "shadowtap.report.sources",
    "open_path": "shadowtap.report.sources",
    "open_url": "shadowtap.report.sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'shadowtap.report' has no attribute {name!r}")
