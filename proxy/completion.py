"""`Completion`: one target's answer to one request, whatever shape it arrived in.

Built by each dialect's answer reader (`shadowtap.dialects`) from a JSON answer or a
reassembled SSE stream, so that scorers, the recorder and metrics never see wire formats.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

# The error of a shadow that was never sent (the request has no faithful translation for its
# target, or cannot be encoded): not the target's failure, so the report leaves it out.
NOT_SENT = "not sent: "


def not_sent(reason: str) -> Completion:
    return Completion(error=NOT_SENT + reason)


def was_sent(status: int | None, error: str | None) -> bool:
    return status is not None or error is None or not error.startswith(NOT_SENT)


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str  # the JSON text exactly as the model produced it (may be invalid JSON)
    id: str | None = None


@dataclass(slots=True)
class Completion:
    """Example: `Completion(status=200, text="Paris.", finish_reason="stop", latency_s=0.41)`.

    `status` is None when no HTTP response arrived (connection refused, reset, timeout);
    `error` is then set, and also for an HTTP error status or a body that cannot be read.
    """

    status: int | None = None
    error: str | None = None
    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Parts of the counts above, where the provider reports them: completion tokens spent on
    # hidden reasoning (never in `text`), prompt tokens read from the provider's prompt cache.
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    # An embeddings answer: one vector per input, in input order (None for other answers).
    embeddings: list[array[float]] | None = None
    latency_s: float | None = None
    ttft_s: float | None = None
    response_model: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300
