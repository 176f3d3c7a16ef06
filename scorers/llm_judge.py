"""`llm_judge`: a judge model compares the two answers to the original request.

The judge (any OpenAI-compatible chat endpoint: `url`, `model`, `api_key`) is asked twice,
concurrently: once with the primary's answer as "A", once with it as "B" — judges favour a
position, and asking both orders cancels that. Each reply must be a JSON object
`{"winner": "A" | "B" | "tie", "rationale": "..."}` (a ```json fence is accepted).

Score = the share of the two orders in which the target was judged at least as good as the
primary (1 = as good or better, 0.5 = the orders disagree, 0 = worse in both). `detail` holds
`verdict` (`tie`, `target_better`, `primary_better`, or `inconsistent` when the orders
disagree), `rationale` and each order's own `winner` and `rationale`.

Judges cost money and time, so besides the common `rate` the scorer has a budget: at most
`max_inflight` judge requests at once and `max_per_second` on average (bursts up to
`max(2, max_per_second)`). A pair over budget is skipped, not queued (stored as a None score
with `detail.skipped`); the primary path is never waited on either way. A failed or unreadable
judge reply is a scorer error. The `api_key` goes to the judge only, never into scores or logs.

    [scorers.judge]
    type = "llm_judge"
    url = "https://api.openai.com"
    model = "gpt-4o-mini"
    api_key = "${JUDGE_KEY}"
    rubric = "Correctness and completeness matter; tone and length do not."
    rate = 0.1
    max_inflight = 8
    max_per_second = 2
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import Field, SecretStr
from shadowtap.completion import Completion
from shadowtap.config import HttpUrl
from shadowtap.scorers.base import IoScorer, IoScorerOptions, Pair, Result, ScorerSkipped, Verdict
from shadowtap.scorers.jsontext import parse_json_answer
from shadowtap.scorers.upstream import UpstreamError, endpoint, post_json

DEFAULT_RUBRIC = (
    "Judge which answer better serves the request: correctness first, then completeness and "
    "following the request's instructions. Ignore differences of wording, style and length "
    "that do not change the substance."
)
SYSTEM_PROMPT = (
    "You compare two answers, A and B, to the same request.\n"
    "Rubric: {rubric}\n"
    'Reply with only a JSON object: {{"winner": "A" | "B" | "tie", "rationale": "<one or two '
    'sentences>"}}. Say "tie" when both serve the request equally well.'
)
MAX_RATIONALE_CHARS = 500
Winner = Literal["primary", "target", "tie"]


class LlmJudgeOptions(IoScorerOptions):
    url: HttpUrl
    model: str
    api_key: SecretStr | None = None
    rubric: str = DEFAULT_RUBRIC
    temperature: Annotated[float, Field(ge=0, le=2)] | None = 0.0
    max_inflight: Annotated[int, Field(ge=2)] = 4  # judge requests; each pair needs 2
    max_per_second: Annotated[float, Field(gt=0)] = 1.0
    max_chars: Annotated[int, Field(gt=0)] = 12_000  # per answer and for the request
    timeout_s: Annotated[float, Field(gt=0)] = 60.0


class Budget:
    """In-flight cap plus a token bucket; `take` never waits: over budget means skip."""

    def __init__(self, max_inflight: int, per_second: float) -> None:
        self.max_inflight = max_inflight
        self.per_second = per_second
        self.capacity = max(2.0, per_second)
        self.tokens = self.capacity
        self.inflight = 0
        self._last = time.monotonic()

    def take(self, calls: int) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.per_second)
        self._last = now
        if self.inflight + calls > self.max_inflight or self.tokens < calls:
            return False
        self.tokens -= calls
        self.inflight += calls
        return True

    def release(self, calls: int) -> None:
        self.inflight -= calls


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " […truncated]"


def render_answer(completion: Completion, limit: int) -> str:
    parts = [completion.text or ""]
    parts += [f"[tool call] {c.name}({c.arguments})" for c in completion.tool_calls]
    return _clip("\n".join(p for p in parts if p) or "(empty answer)", limit)


def render_request(request: dict[str, Any] | None, limit: int) -> str:
    request = request or {}
    messages = request.get("messages")
    if isinstance(messages, list):
        lines = []
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            lines.append(f"{message.get('role', 'user')}: {content or ''}")
        return _clip("\n".join(lines), limit)
    if "prompt" in request:
        return _clip(str(request["prompt"]), limit)
    return _clip(json.dumps(request, ensure_ascii=False), limit)


def parse_winner(content: str) -> tuple[str, str]:
    """('A' | 'B' | 'tie', rationale) from a judge reply; ValueError when there is none."""
    try:
        reply = parse_json_answer(content)
    except ValueError:
        found = re.search(r"\{.*\}", content, re.DOTALL)  # JSON inside some prose
        if found is None:
            raise ValueError("judge reply holds no JSON object") from None
        reply = json.loads(found.group(0))
    if not isinstance(reply, dict):
        raise ValueError("judge reply is not a JSON object")
    winner = str(reply.get("winner", "")).strip()
    winner = {"a": "A", "b": "B", "tie": "tie"}.get(winner.casefold(), "")
    if not winner:
        raise ValueError(f"judge reply has no valid winner (got {reply.get('winner')!r})")
    return winner, _clip(str(reply.get("rationale", "")), MAX_RATIONALE_CHARS)


def _winner(letter: str, *, primary_is_a: bool) -> Winner:
    if letter == "tie":
        return "tie"
    return "primary" if (letter == "A") == primary_is_a else "target"


class LlmJudge(IoScorer[LlmJudgeOptions]):
    Options = LlmJudgeOptions

    def __init__(self, name: str, options: LlmJudgeOptions) -> None:
        super().__init__(name, options)
        self._url = endpoint(options.url, "/v1/chat/completions")
        self._budget = Budget(options.max_inflight, options.max_per_second)
        self._system = SYSTEM_PROMPT.format(rubric=options.rubric)

    async def _ask(
        self, session: aiohttp.ClientSession, request: str, a: str, b: str
    ) -> tuple[str, str]:
        user = f"## Request\n{request}\n\n## Answer A\n{a}\n\n## Answer B\n{b}"
        body: dict[str, Any] = {
            "model": self.options.model,
            "messages": [
                {"role": "system", "content": self._system},
                {"role": "user", "content": user},
            ],
        }
        if self.options.temperature is not None:
            body["temperature"] = self.options.temperature
        payload = await post_json(session, self._url, body, self.options.api_key)
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(f"{self._url} answered without choices[0].message") from None
        return parse_winner(str(content or ""))

    async def score(self, pair: Pair, session: aiohttp.ClientSession) -> Result:
        if pair.primary.embeddings is not None or pair.target.embeddings is not None:
            return None  # vectors, not answers a judge can read
        if not self._budget.take(2):
            raise ScorerSkipped("judge budget")
        limit = self.options.max_chars
        request = render_request(pair.request, limit)
        primary = render_answer(pair.primary, limit)
        target = render_answer(pair.target, limit)
        try:
            # A TaskGroup, not gather: when one order fails the other is cancelled, not leaked.
            async with asyncio.TaskGroup() as group:
                ab = group.create_task(self._ask(session, request, primary, target))
                ba = group.create_task(self._ask(session, request, target, primary))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        finally:
            self._budget.release(2)
        (first, why_first), (second, why_second) = ab.result(), ba.result()
        winners = [_winner(first, primary_is_a=True), _winner(second, primary_is_a=False)]
        score = sum(w != "primary" for w in winners) / 2
        if winners[0] == winners[1]:
            verdict = {"tie": "tie", "target": "target_better", "primary": "primary_better"}[
                winners[0]
            ]
        else:
            verdict = "inconsistent"
        return Verdict(
            score,
            {
                "verdict": verdict,
                "rationale": why_first,
                "orders": [
                    {"first": "primary", "winner": winners[0], "rationale": why_first},
                    {"first": "target", "winner": winners[1], "rationale": why_second},
                ],
            },
        )
