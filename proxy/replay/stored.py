"""Stored answers read back: a `responses` row as the `Completion` the scorers read.

Replay (the primary's recorded answer, and replayed answers left unscored) and export read
stored answers the same way; the column order is `responses`' from `status` to
`response_model` (see `shadowtap.recorder.schema`).
"""

from __future__ import annotations

import orjson
from shadowtap.completion import Completion, ToolCall


def recorded_completion(
    status: int | None,
    error: str | None,
    latency_ms: float | None,
    ttft_ms: float | None,
    text: str | None,
    tool_calls: str | None,
    finish_reason: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    response_model: str | None,
) -> Completion:
    """A stored answer (a `responses` row) back as the `Completion` scorers read."""
    return Completion(
        status=status,
        error=error,
        text=text,
        tool_calls=stored_tool_calls(tool_calls),
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_s=None if latency_ms is None else latency_ms / 1000.0,
        ttft_s=None if ttft_ms is None else ttft_ms / 1000.0,
        response_model=response_model,
    )


def stored_tool_calls(text: str | None) -> list[ToolCall]:
    """The `tool_calls` column (`[{"id", "name", "arguments"}]`) as `ToolCall`s; anything
    else stored there (it should not be) reads as no calls."""
    if not text:
        return []
    try:
        calls = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(calls, list):
        return []
    return [
        ToolCall(
            name=str(call.get("name", "")),
            arguments=str(call.get("arguments", "")),
            id=call.get("id") if isinstance(call.get("id"), str) else None,
        )
        for call in calls
        if isinstance(call, dict)
    ]
