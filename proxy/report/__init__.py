"""`shadowtap report`: turn recorded pairs into a swap decision with honest intervals.

Never imported by the proxy's hot path. Names load on first use (PEP 562), so that building the
CLI parser (which imports `proxy.report.command` for its arguments) costs `serve` nothing.

    from proxy.report import build_report, open_db, render_text
    report = build_report(open_db("shadowtap.duckdb"), GatesConfig())
    print(render_text(report))
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Report": "proxy.report.model",
    "report_json": "proxy.report.model",
    "build_report": "proxy.report.build",
    "render_html": "proxy.report.html",
    "write_html": "proxy.report.html",
    "print_report": "proxy.report.text",
    "render_text": "proxy.report.text",
    "Source": "proxy.report.sources",
    "SourceError": "proxy.report.sources",
    "fetch_pairs": "proxy.report.sources",
    "from_pair_rows": "proxy.report.sources",
    "open_db": "proxy.report.sources",
    "open_parquet": "proxy.report.sources",
    "open_path": "proxy.report.sources",
    "open_url": "proxy.report.sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'proxy.report' has no attribute {name!r}")
