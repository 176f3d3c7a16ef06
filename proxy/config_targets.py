"""Where requests go: `[primary]`, `[candidates.NAME]` and `[secondary]`."""

from __future__ import annotations

from pydantic import SecretStr
from shadowtap.config_base import HttpUrl, PositiveSeconds, Price, Rate, Strict


class Pricing(Strict):
    price_per_1k_prompt: Price | None = None
    price_per_1k_completion: Price | None = None


class PrimaryConfig(Pricing):
    url: HttpUrl
    timeout_s: PositiveSeconds = 600.0


class ShadowTargetConfig(Pricing):
    """What candidates and the secondary share: where to send, how long to wait, what to add."""

    timeout_s: PositiveSeconds = 60.0
    headers: dict[str, SecretStr] = {}
    rate: Rate = 1.0
    # The client's query parameters this target receives (by name); none by default, since a
    # query string can carry the client's credentials (`?api_key=`).
    forward_query: list[str] = []


class CandidateConfig(ShadowTargetConfig):
    url: HttpUrl
    model: str | None = None
    api_key: SecretStr | None = None
    forward_client_auth: bool = False


class SecondaryConfig(ShadowTargetConfig):
    """The primary's model asked again: its disagreement with the primary is the noise floor."""

    rate: Rate = 0.0
    api_key: SecretStr | None = None
    # Same provider as the primary, so the client's own credentials are the natural default.
    forward_client_auth: bool = True
