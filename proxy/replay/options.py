"""What a replay is asked to do (`ReplayOptions`), checked against the config before it runs.

`checked_target` is the one place the options meet the config: the candidate must be
configured, the counts must make sense, and a cost budget needs the candidate's prices. Each
failure is a `ReplayError` whose message is one line for the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shadowtap.config import Config
from shadowtap.replay.source import Selection
from shadowtap.shadow import ShadowTarget, shadow_targets


class ReplayError(Exception):
    """The replay cannot start; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    candidate: str
    selection: Selection = field(default_factory=Selection)
    concurrency: int = 8
    rps: float | None = None
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    max_consecutive_errors: int = 20
    max_retries: int = 3  # per request, on 429/503
    progress: bool = True


def candidate_target(config: Config, name: str) -> ShadowTarget:
    """The configured candidate, exactly as live shadowing would call it."""
    for target in shadow_targets(config):
        if target.role == "candidate" and target.name == name:
            return target
    configured = ", ".join(config.candidates) or "none"
    raise ReplayError(f"no candidate {name!r} in the config (configured: {configured})")


def checked_target(config: Config, options: ReplayOptions) -> ShadowTarget:
    """The candidate the options name, once the options are known to be sound for it."""
    if options.concurrency < 1:
        raise ReplayError(f"--concurrency must be 1 or more (got {options.concurrency})")
    if options.max_retries < 0:
        raise ReplayError(f"--max-retries must be 0 or more (got {options.max_retries})")
    target = candidate_target(config, options.candidate)
    if options.max_cost_usd is not None and target.prices.cost_usd(0, 0) is None:
        raise ReplayError(
            f"--max-cost-usd needs the candidate's prices: set price_per_1k_prompt and "
            f"price_per_1k_completion in [candidates.{options.candidate}]"
        )
    return target
