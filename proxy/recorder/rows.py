"""Turning a batch of `Exchange`s into one Arrow table per DuckDB table, privacy applied.

Columnar lists are filled in one pass and handed to Arrow with explicit types, because the
Arrow scan is DuckDB's fast bulk path (row-at-a-time `executemany` is ~100x slower). Integer
columns are int64 on the Arrow side and narrowed by DuckDB's INSERT, so an out-of-range value
fails the write (and is counted) instead of wrapping silently.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pyarrow as pa

from proxy.completion import ToolCall
from proxy.exchange import Exchange
from proxy.recorder.schema import COLUMNS
from proxy.redact import redact, redact_json_text

Bodies = Literal["full", "redacted", "none"]

ARROW_SCHEMAS: dict[str, pa.Schema] = {
    "exchanges": pa.schema(
        [
            ("request_id", pa.string()),
            ("started_at", pa.timestamp("us", tz="UTC")),
            ("method", pa.string()),
            ("path", pa.string()),
            ("route", pa.string()),
            ("model", pa.string()),
            ("stream", pa.bool_()),
            ("request_body", pa.string()),
            ("header_names", pa.list_(pa.string())),
        ]
    ),
    "responses": pa.schema(
        [
            ("request_id", pa.string()),
            ("target", pa.string()),
            ("role", pa.string()),
            ("status", pa.int64()),
            ("error", pa.string()),
            ("latency_ms", pa.float64()),
            ("ttft_ms", pa.float64()),
            ("text", pa.string()),
            ("tool_calls", pa.string()),
            ("finish_reason", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("response_model", pa.string()),
            ("cost_usd", pa.float64()),
        ]
    ),
    "scores": pa.schema(
        [
            ("request_id", pa.string()),
            ("target", pa.string()),
            ("scorer", pa.string()),
            ("score", pa.float64()),
            ("detail", pa.string()),
            ("error", pa.string()),
            ("threshold", pa.float64()),
        ]
    ),
}


class Privacy:
    """What `storage.bodies` keeps of each free-text field (see `proxy.redact`)."""

    def __init__(self, bodies: Bodies) -> None:
        self.keep_bodies = bodies != "none"
        # "full" still scrubs credentials; personal data only goes in "full".
        self.pii = bodies != "full"

    def text(self, value: str | None) -> str | None:
        if value is None or not self.keep_bodies:
            return None
        return redact(value, pii=self.pii)

    def metadata(self, value: str | None) -> str | None:
        """Errors and paths are kept in every mode (they are how failures are diagnosed), but
        an upstream error can echo the rejected key or the user's prompt, so they are scrubbed."""
        if value is None:
            return None
        return redact(value, pii=self.pii)

    def request_body(self, exchange: Exchange) -> str | None:
        if not self.keep_bodies:
            return None
        if exchange.request_json is not None:
            return redact_json_text(exchange.request_json, pii=self.pii)
        if not exchange.request_body:
            return None
        # Not JSON: stored as a JSON string so the column stays valid JSON.
        raw = exchange.request_body.decode("utf-8", "replace")
        return orjson.dumps(redact(raw, pii=self.pii)).decode()

    def tool_calls(self, calls: list[ToolCall]) -> str | None:
        if not calls:
            return None
        if not self.keep_bodies:
            # Which tools were called is metadata; their arguments are user content.
            return orjson.dumps([{"id": c.id, "name": c.name} for c in calls]).decode()
        return orjson.dumps(
            [
                {"id": c.id, "name": c.name, "arguments": redact(c.arguments, pii=self.pii)}
                for c in calls
            ]
        ).decode()

    def detail(self, detail: dict[str, Any] | None) -> str | None:
        # Scorer details may quote either answer, so they follow the body setting.
        if detail is None or not self.keep_bodies:
            return None
        return redact_json_text(detail, pii=self.pii)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def to_arrow(exchanges: list[Exchange], privacy: Privacy) -> dict[str, pa.Table]:
    """One Arrow table per DuckDB table for the batch; raises on a value that cannot convert."""
    cols: dict[str, dict[str, list[Any]]] = {
        table: {name: [] for name in names} for table, names in COLUMNS.items()
    }
    ex, resp, sc = cols["exchanges"], cols["responses"], cols["scores"]
    for exchange in exchanges:
        rid = exchange.request_id
        ex["request_id"].append(rid)
        ex["started_at"].append(_utc(exchange.started_at))
        ex["method"].append(exchange.method)
        ex["path"].append(privacy.metadata(exchange.path))
        ex["route"].append(exchange.route)
        ex["model"].append(exchange.model)
        ex["stream"].append(exchange.stream)
        ex["request_body"].append(privacy.request_body(exchange))
        ex["header_names"].append([name.lower() for name in exchange.header_names])
        for result in exchange.results.values():
            c = result.completion
            resp["request_id"].append(rid)
            resp["target"].append(result.target)
            resp["role"].append(result.role)
            resp["status"].append(c.status)
            resp["error"].append(privacy.metadata(c.error))
            resp["latency_ms"].append(_ms(c.latency_s))
            resp["ttft_ms"].append(_ms(c.ttft_s))
            resp["text"].append(privacy.text(c.text))
            resp["tool_calls"].append(privacy.tool_calls(c.tool_calls))
            resp["finish_reason"].append(c.finish_reason)
            resp["prompt_tokens"].append(c.prompt_tokens)
            resp["completion_tokens"].append(c.completion_tokens)
            resp["response_model"].append(c.response_model)
            resp["cost_usd"].append(result.cost_usd)
        for score in exchange.scores:
            sc["request_id"].append(rid)
            sc["target"].append(score.target)
            sc["scorer"].append(score.scorer)
            sc["score"].append(score.score)
            sc["detail"].append(privacy.detail(score.detail))
            sc["error"].append(privacy.metadata(score.error))
            sc["threshold"].append(score.threshold)
    return {
        table: pa.Table.from_pydict(columns, schema=ARROW_SCHEMAS[table])
        for table, columns in cols.items()
    }
