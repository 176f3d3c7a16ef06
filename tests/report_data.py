"""Generated traffic where the truth is known, written through the real `Recorder` (a support
module: the report tests import these builders).

Each candidate follows a `Behaviour` (how it agrees, how slow it is, how often it fails, what
it costs); the secondary (noise floor) agrees like a same-model replay. The report tests check
that verdicts follow from these behaviours and nothing else.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry
from shadowtap.completion import Completion, ToolCall
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange, Score, TargetResult
from shadowtap.ids import uuid7
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ROUTES = ("/v1/chat/completions", "/v1/chat/completions", "/v1/responses")
MODELS = ("gpt-4o", "gpt-4o-mini")
SIMILARITY_THRESHOLD = 0.8


@dataclass(frozen=True)
class Behaviour:
    agreement: tuple[float, float] | None = (18.0, 2.0)  # Beta(a, b) similarity; None: identical
    latency_factor: float = 1.0  # times the primary's latency on the same request
    error_rate: float = 0.0
    cost_factor: float = 1.0
    # What the similarity scorer stored: a score, an error (it raised), NULL (not applicable),
    # or no row at all (not configured for this target).
    scoring: Literal["score", "error", "not_applicable", "absent"] = "score"
    # On requests that declare tools (make_exchanges' tools_every): the similarity there
    # (default: `agreement`) and how its tool call comes out.
    tool_agreement: tuple[float, float] | Literal["same"] | None = "same"
    tool_call: Literal["ok", "unknown_tool", "unparseable", "off_schema"] = "ok"


NOISE = Behaviour()  # the primary's model again: similarity ~ Beta(18, 2), mean 0.9
IDENTICAL = Behaviour(agreement=None)
PARAPHRASE = Behaviour(agreement=(6.0, 4.0))  # mean 0.6: a drop of 0.3 against the noise floor
SLOW = Behaviour(latency_factor=2.0)
FLAKY = Behaviour(error_rate=0.2)
PRICEY = Behaviour(cost_factor=3.0)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOL_CALLS = {
    "ok": ToolCall("get_weather", '{"city": "Oslo"}', "call_1"),
    "unknown_tool": ToolCall("get_wether", '{"city": "Oslo"}', "call_1"),
    "unparseable": ToolCall("get_weather", '{"city": "Oslo"', "call_1"),
    "off_schema": ToolCall("get_weather", '{"town": 42}', "call_1"),
}


def _completion(text: str | None, latency_ms: float, stream: bool, error: bool) -> Completion:
    if error:
        return Completion(status=500, error="HTTP 500 from upstream", latency_s=latency_ms / 1e3)
    return Completion(
        status=200,
        text=text,
        finish_reason="stop",
        prompt_tokens=120,
        completion_tokens=80,
        latency_s=latency_ms / 1000,
        ttft_s=latency_ms * 0.3 / 1000 if stream else None,
    )


def _score(target: str, similarity: float, behaviour: Behaviour) -> Score:
    if behaviour.scoring == "error":
        return Score(target, "similarity", None, error="ValueError: model output too odd")
    value = None if behaviour.scoring == "not_applicable" else similarity
    return Score(target, "similarity", value, threshold=SIMILARITY_THRESHOLD)


def make_exchanges(
    n: int,
    candidates: dict[str, Behaviour],
    *,
    seed: int = 0,
    secondary: Behaviour | None = NOISE,
    secondary_every: int = 1,  # the secondary answers every k-th request (its sampling rate)
    tools_every: int = 0,  # every k-th request declares a tool the primary calls (0: none)
    slice_headers: Callable[[int], dict[str, str]] | None = None,  # request i's slice headers
    start: datetime = START,
    question: str = "Question {i}: summarise <b>ticket</b> #{i} & reply",
) -> list[Exchange]:
    rng = random.Random(seed)
    exchanges = []
    for i in range(n):
        stream = i % 2 == 0
        tools = bool(tools_every) and i % tools_every == tools_every - 1
        prompt = question.format(i=i)
        primary_text = f"Primary answer {i}: the ticket is about billing."
        primary_ms = rng.lognormvariate(math.log(800), 0.5)
        results = {
            "primary": TargetResult(
                "primary",
                "primary",
                _completion(primary_text, primary_ms, stream, False),
                cost_usd=0.002,
            )
        }
        if tools:
            results["primary"].completion.tool_calls = [TOOL_CALLS["ok"]]
        scores: list[Score] = []
        shadows = dict(candidates)
        if secondary is not None and i % secondary_every == 0:
            shadows["secondary"] = secondary
        for name, behaviour in shadows.items():
            failed = rng.random() < behaviour.error_rate
            ms = primary_ms * behaviour.latency_factor * rng.lognormvariate(0, 0.1)
            agreement = behaviour.agreement
            if tools and behaviour.tool_agreement != "same":
                agreement = behaviour.tool_agreement
            if agreement is None:
                similarity, text = 1.0, primary_text
            else:
                similarity = rng.betavariate(*agreement)
                text = f"{name} says {i}: something about money ({similarity:.2f})"
            role = "secondary" if name == "secondary" else "candidate"
            results[name] = TargetResult(
                name,
                role,
                _completion(text, ms, stream, failed),
                cost_usd=None if failed else 0.002 * behaviour.cost_factor,
            )
            if tools and not failed:
                results[name].completion.tool_calls = [TOOL_CALLS[behaviour.tool_call]]
            if not failed and behaviour.scoring != "absent":
                scores.append(_score(name, similarity, behaviour))
        body: dict[str, object] = {
            "model": MODELS[i % 2],
            "stream": stream,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": prompt},
            ],
        }
        if tools:
            body["tools"] = [WEATHER_TOOL]
        exchanges.append(
            Exchange(
                request_id=uuid7(),
                started_at=start + timedelta(minutes=i),
                method="POST",
                path=ROUTES[i % 3],
                route=ROUTES[i % 3],
                model=MODELS[i % 2],
                stream=stream,
                request_body=json.dumps(body).encode(),
                request_json=body,
                results=results,
                scores=scores,
                slice_headers=slice_headers(i) if slice_headers else {},
            )
        )
    return exchanges


def write(exchanges: list[Exchange], path: Path, parquet_dir: Path | None = None) -> Path:
    """Record through the proxy's own writer (full bodies, so examples can be checked)."""
    storage = StorageConfig(
        path=str(path),
        bodies="full",
        flush_interval_ms=20,
        parquet_dir=None if parquet_dir is None else str(parquet_dir),
        queue_max=len(exchanges) + 1,  # tests record in a burst; nothing may be dropped
    )
    recorder = Recorder(storage, Metrics(CollectorRegistry()))
    recorder.start()
    for exchange in exchanges:
        assert recorder.record(exchange)
    recorder.close()
    return path
