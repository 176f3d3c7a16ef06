"""`Completion`: one target's answer to one request, whatever shape it arrived in.

Built by `shadowtap.normalize` from OpenAI chat-completions JSON or from a reassembled SSE stream,
so that scorers, the recorder and metrics never see wire formats.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field


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
