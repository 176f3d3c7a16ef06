"""The Grafana dashboards as the generator builds them, and their queries as Grafana sends them."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()
BOARDS: dict[str, dict[str, Any]] = generate.dashboards()


def panel_queries(board: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of a dashboard's JSON, rows included."""
    for panel in board.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["refId"], target["expr"]


def interpolate(expr: str, candidates: list[str], rate_interval: str = "1m") -> str:
    """`expr` as Grafana sends it to Prometheus with `candidates` selected.

    Like Grafana's Prometheus datasource, several values of the multi-value `$candidate`
    become a regex alternation `(a|b)`, regex metacharacters escaped.
    """
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", name) for name in candidates]
    values = {
        "$candidate": escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")",
        "$__rate_interval": rate_interval,
        "$__interval": "15s",
        "$__range": "1h",
    }
    for name in sorted(values, key=len, reverse=True):  # $__range before a shorter prefix
        expr = expr.replace(name, values[name])
    return expr
