"""What an answer cost, from a target's configured per-1,000-token prices."""

from __future__ import annotations

from dataclasses import dataclass

from shadowtap.config import Pricing


@dataclass(frozen=True, slots=True)
class Prices:
    per_1k_prompt: float | None = None
    per_1k_completion: float | None = None

    @classmethod
    def of(cls, pricing: Pricing) -> Prices:
        return cls(pricing.price_per_1k_prompt, pricing.price_per_1k_completion)

    def cost_usd(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """None when no price is configured: unknown, not free."""
        if self.per_1k_prompt is None and self.per_1k_completion is None:
            return None
        return (prompt_tokens or 0) / 1000 * (self.per_1k_prompt or 0.0) + (
            completion_tokens or 0
        ) / 1000 * (self.per_1k_completion or 0.0)
