"""The simulated models' personalities: latency, wording and failure behaviour.

Why each candidate gets the verdict the demo expects (the gates are in `shadowtap.demo.setup`):

* `primary` rewords one sentence in ~12% of its prose answers. Asked twice (the primary and
  the *secondary*) it therefore disagrees with itself a little: that is the noise floor every
  candidate is judged against. Its JSON and tool-call answers are deterministic.
* `fast-agree` shares the primary's answer generator *and* its noise rate, so its disagreement
  with the primary has the same distribution as the secondary's: the agreement drop is ~0. It is
  faster (lower TTFT and per-token delay) and never fails, so every gate passes.
* `paraphrase` rewords every sentence, reorders them and adds hedges, picks other tool-argument
  values a third of the time and emits broken JSON in a fifth of JSON-mode answers. Its text
  similarity and exact/JSON/tool agreement sit far below the noise floor: it fails the agreement
  gate by a wide margin. Its answers are longer and start later, so it is ~15% slower: inside
  the latency gate, so agreement is the failing gate rather than latency.
* `tool-breaker` answers prose and JSON like the primary (same noise, same speed), so it is
  fine on average, but 90% of its tool calls are broken (an undeclared tool, arguments cut
  off, or arguments off the tool's parameters): it fails `max_invalid_tool_call_rate`, and the
  report's "where it breaks" puts the `tools=yes` slice first.
* `anthropic-agree` is `fast-agree` reached through another provider's API: shadowtap sends
  it the primary's OpenAI chat requests translated into the Anthropic Messages API and reads
  its Anthropic answers back into the same shape, so its agreement with the primary has the
  noise floor's distribution and it passes, like `fast-agree`. Requests with no faithful
  translation (JSON mode without a schema) are not sent to it: recorded as skipped, with
  the reason, and left out of its verdict.
* `flaky` answers exactly like the primary but fails ~25% of requests (500/503s, hangs past
  the shadow timeout, connection resets): its error rate's anytime interval lies above the 5%
  gate from ~150 requests on, even corrected for every candidate and gate, so it fails on
  errors.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from shadowtap.demo.answers import Style

Fault = Literal["error", "hang", "reset"]


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    style: Style
    ttft_median_s: float  # log-normal time to first token
    ttft_sigma: float
    token_median_s: float  # log-normal delay per generated token
    token_sigma: float = 0.3
    error_rate: float = 0.0  # answer 500/503
    hang_rate: float = 0.0  # never answer (until the server shuts down or hang_s passes)
    reset_rate: float = 0.0  # drop the connection (mid-stream when streaming)
    hang_s: float = 120.0

    def ttft_s(self, rng: random.Random, speed: float) -> float:
        return rng.lognormvariate(math.log(self.ttft_median_s), self.ttft_sigma) / speed

    def token_delay_s(self, rng: random.Random, speed: float) -> float:
        """The per-token delay for one response (drawn once per response, as real decode speed
        varies per request with batch size, not per token)."""
        return rng.lognormvariate(math.log(self.token_median_s), self.token_sigma) / speed

    def fault(self, rng: random.Random) -> Fault | None:
        roll = rng.random()
        for fault, rate in (
            ("error", self.error_rate),
            ("hang", self.hang_rate),
            ("reset", self.reset_rate),
        ):
            if roll < rate:
                return fault  # type: ignore[return-value]
            roll -= rate
        return None


NOISE = 0.12  # the primary's (and its look-alikes') share of slightly reworded answers

PROFILES: dict[str, Profile] = {
    "primary": Profile(
        name="primary",
        style=Style(noise_rate=NOISE),
        ttft_median_s=0.40,
        ttft_sigma=0.35,
        token_median_s=0.016,
    ),
    "fast-agree": Profile(
        name="fast-agree",
        style=Style(noise_rate=NOISE),
        ttft_median_s=0.22,
        ttft_sigma=0.30,
        token_median_s=0.010,
    ),
    "anthropic-agree": Profile(
        name="anthropic-agree",
        style=Style(noise_rate=NOISE),
        ttft_median_s=0.26,
        ttft_sigma=0.30,
        token_median_s=0.011,
    ),
    "paraphrase": Profile(
        name="paraphrase",
        style=Style(paraphrase=True, json_break_rate=0.2, tool_drift_rate=0.35),
        ttft_median_s=0.46,
        ttft_sigma=0.35,
        token_median_s=0.016,
    ),
    "tool-breaker": Profile(
        name="tool-breaker",
        style=Style(noise_rate=NOISE, tool_break_rate=0.9),
        ttft_median_s=0.30,
        ttft_sigma=0.30,
        token_median_s=0.012,
    ),
    "flaky": Profile(
        name="flaky",
        style=Style(noise_rate=NOISE),
        ttft_median_s=0.40,
        ttft_sigma=0.35,
        token_median_s=0.016,
        # Hangs are few: each one still in flight at the end holds the demo's shutdown for up
        # to the shadow timeout.
        error_rate=0.17,
        hang_rate=0.02,
        reset_rate=0.06,
    ),
}
