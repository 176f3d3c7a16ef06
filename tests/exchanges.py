"""Hand-built exchanges for tests that start after the proxy (scorers, runner)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from shadowtap.completion import Completion
from shadowtap.exchange import Exchange, Role, TargetResult


def chat_exchange(
    answers: dict[str, Completion],
    request_json: dict[str, Any] | None = None,
    request_id: str = "r1",
) -> Exchange:
    """A chat-completions exchange with one result per target name; "primary" and "secondary"
    get their own roles, every other name is a candidate."""
    request = {} if request_json is None else request_json
    results = {}
    for name, completion in answers.items():
        role: Role = name if name in ("primary", "secondary") else "candidate"  # type: ignore[assignment]
        results[name] = TargetResult(name, role, completion)
    return Exchange(
        request_id=request_id,
        started_at=datetime.now(UTC),
        method="POST",
        path="/v1/chat/completions",
        route="/v1/chat/completions",
        model="m",
        stream=False,
        request_body=orjson.dumps(request),
        request_json=request,
        results=results,
    )
