"""Realistic made-up exchanges, for tests and benchmarks only (never part of the package): what
the recorder and replay benchmarks write (`bench/` imports it from here) and the crash tests
record from a child process. One exchange = 1 exchanges row + 3 responses (primary, secondary,
candidate "small") + 4 scores (two scorers on each non-primary target).

Example: `synthetic_exchange(7, stream=True)`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from shadowtap.completion import Completion, ToolCall
from shadowtap.exchange import Exchange, Score, TargetResult
from shadowtap.ids import uuid7

ANSWER = (
    "The capital of France is Paris. It has been the country's political and cultural centre "
    "since the Middle Ages, and today it is home to about two million people in the city "
    "proper and over twelve million in the wider region. "
)


def synthetic_exchange(
    i: int = 0,
    *,
    started_at: datetime | None = None,
    stream: bool = False,
    extra: str = "",
) -> Exchange:
    """`extra` is appended to every free-text field (body, answers, tool arguments, errors,
    score detail): tests put canary secrets there."""
    body = {
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"Question {i}: what is the capital of France? {extra}"},
        ],
        "temperature": 0.2,
    }
    raw = orjson.dumps(body)

    def completion(target: str, latency: float, status: int = 200) -> Completion:
        failed = status >= 400
        return Completion(
            status=status,
            error=f"upstream said: invalid request {extra}" if failed else None,
            text=None if failed else f"{ANSWER}({target} {i}) {extra}",
            tool_calls=[]
            if failed
            else [ToolCall(name="lookup", arguments=f'{{"q": "capital {extra}"}}', id="call_1")],
            finish_reason=None if failed else "stop",
            latency_s=latency,
            ttft_s=latency / 4 if stream else None,
            response_model=None if failed else "gpt-4o-mini-2024-07-18",
            prompt_tokens=None if failed else 31 + i % 7,
            completion_tokens=None if failed else 48 + i % 11,
        )

    results = {
        "primary": TargetResult("primary", "primary", completion("primary", 0.4 + i % 5 / 10)),
        "secondary": TargetResult(
            "secondary", "secondary", completion("secondary", 0.42 + i % 3 / 10)
        ),
        "small": TargetResult(
            "small",
            "candidate",
            completion("small", 0.2 + i % 4 / 10, status=500 if i % 10 == 9 else 200),
            cost_usd=0.00012,
        ),
    }
    scores = [
        Score(target, scorer, value, detail={"note": f"compared {extra}"}, threshold=0.8)
        for target in ("secondary", "small")
        for scorer, value in (("similarity", 0.9 - i % 5 / 20), ("exact", float(i % 2)))
    ]
    return Exchange(
        request_id=uuid7(),
        started_at=started_at or datetime.now(UTC),
        method="POST",
        path="/v1/chat/completions",
        route="/v1/chat/completions",
        model="gpt-4o-mini",
        stream=stream,
        request_body=raw,
        request_json=body,
        header_names=["content-type", "authorization"],
        results=results,
        scores=scores,
    )
