"""The three export formats, each a writer over `ExportRow`s.

* `jsonl`: one chat conversation per line in the OpenAI chat message format — the request's
  `messages` followed by the primary's answer as the assistant message (usable as a
  fine-tuning or eval set), the request's `tools` when it had any, `metadata`, and with a
  candidate its answer and scores under `candidate`.
* `openai-batch`: a Batch API input file — `{"custom_id", "method", "url", "body"}` per line,
  the body as recorded without streaming, `model` replaced when asked. A file holds at most
  50,000 requests and 200 MB; past that the export goes on in `NAME.2.jsonl`, `NAME.3.jsonl`...
* `parquet`: one row per exported request (or pair), answers and scores as columns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from shadowtap.completion import Completion
from shadowtap.export.rows import ExportRow

BATCH_URLS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"}
)
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200 * 1024 * 1024
PARQUET_ROWS_PER_GROUP = 10_000


def assistant_message(answer: Completion) -> dict[str, Any]:
    """An answer as the assistant message the Chat Completions API would have returned."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id or f"call_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for index, call in enumerate(answer.tool_calls)
        ]
    return message


def chat_line(row: ExportRow, left_out: Counter[str]) -> bytes | None:
    messages = row.request.get("messages")
    if not isinstance(messages, list):
        left_out["not_chat"] += 1
        return None
    if not row.primary.ok:
        left_out["primary_failed"] += 1
        return None
    line: dict[str, Any] = {"messages": [*messages, assistant_message(row.primary)]}
    if isinstance(row.request.get("tools"), list):
        line["tools"] = row.request["tools"]
    line["metadata"] = {
        "request_id": row.request_id,
        "started_at": row.started_at.isoformat(),
        "route": row.route,
        "model": row.model,
        "finish_reason": row.primary.finish_reason,
    }
    if row.candidate is not None:
        line["candidate"] = {
            "name": row.candidate_name,
            "source": row.candidate_source,
            "message": assistant_message(row.candidate) if row.candidate.ok else None,
            "error": row.candidate.error,
            "status": row.candidate.status,
            "scores": row.scores,
        }
    return orjson.dumps(line) + b"\n"


def batch_line(row: ExportRow, model: str | None, left_out: Counter[str]) -> bytes | None:
    if row.path not in BATCH_URLS:
        left_out["batch_route"] += 1
        return None
    body = {k: v for k, v in row.request.items() if k not in ("stream", "stream_options")}
    if model is not None:
        body["model"] = model
    line = {"custom_id": row.request_id, "method": "POST", "url": row.path, "body": body}
    return orjson.dumps(line) + b"\n"


def write_lines(
    out: Path,
    lines: Iterable[bytes],
    split: bool,
    max_requests: int = BATCH_MAX_REQUESTS,
    max_bytes: int = BATCH_MAX_BYTES,
) -> list[Path]:
    """Write the lines to `out`; with `split`, a new file past the Batch API's limits."""
    files: list[Path] = []
    handle: IO[bytes] | None = None
    count = size = 0
    try:
        for line in lines:
            full = count >= max_requests or size + len(line) > max_bytes
            if handle is None or (split and full):
                if handle is not None:
                    handle.close()
                path = (
                    out if not files else out.with_name(f"{out.stem}.{len(files) + 1}{out.suffix}")
                )
                handle = path.open("wb")
                files.append(path)
                count = size = 0
            handle.write(line)
            count += 1
            size += len(line)
        if handle is None:  # nothing to export: still an (empty) file, as asked
            out.write_bytes(b"")
            files.append(out)
    finally:
        if handle is not None:
            handle.close()
    return files


def _tool_calls_json(answer: Completion | None) -> str | None:
    if answer is None or not answer.tool_calls:
        return None
    return orjson.dumps(
        [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in answer.tool_calls]
    ).decode()


PARQUET_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("route", pa.string()),
        ("model", pa.string()),
        ("request_body", pa.string()),
        ("primary_status", pa.int64()),
        ("primary_text", pa.string()),
        ("primary_tool_calls", pa.string()),
        ("primary_finish_reason", pa.string()),
        ("primary_prompt_tokens", pa.int64()),
        ("primary_completion_tokens", pa.int64()),
        ("candidate", pa.string()),
        ("candidate_source", pa.string()),
        ("candidate_status", pa.int64()),
        ("candidate_error", pa.string()),
        ("candidate_text", pa.string()),
        ("candidate_tool_calls", pa.string()),
        ("candidate_latency_ms", pa.float64()),
        ("scores", pa.map_(pa.string(), pa.float64())),
    ]
)


def _parquet_record(row: ExportRow) -> dict[str, Any]:
    c = row.candidate
    return {
        "request_id": row.request_id,
        "started_at": row.started_at,
        "route": row.route,
        "model": row.model,
        "request_body": orjson.dumps(row.request).decode(),
        "primary_status": row.primary.status,
        "primary_text": row.primary.text,
        "primary_tool_calls": _tool_calls_json(row.primary),
        "primary_finish_reason": row.primary.finish_reason,
        "primary_prompt_tokens": row.primary.prompt_tokens,
        "primary_completion_tokens": row.primary.completion_tokens,
        "candidate": row.candidate_name,
        "candidate_source": row.candidate_source,
        "candidate_status": c.status if c else None,
        "candidate_error": c.error if c else None,
        "candidate_text": c.text if c else None,
        "candidate_tool_calls": _tool_calls_json(c),
        "candidate_latency_ms": row.candidate_latency_ms,
        "scores": list((row.scores or {}).items()) if row.scores is not None else None,
    }


def write_parquet(out: Path, rows: Iterator[ExportRow]) -> int:
    """All rows into one Parquet file, a row group at a time; returns the row count."""
    written = 0
    with pq.ParquetWriter(out, PARQUET_SCHEMA, compression="zstd") as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(_parquet_record(row))
            if len(batch) >= PARQUET_ROWS_PER_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
                written += len(batch)
                batch = []
        if batch or not written:
            writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
            written += len(batch)
    return written
