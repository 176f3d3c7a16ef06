"""Where requests go: `[primary]`, `[candidates.NAME]` and `[secondary]`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr
from shadowtap.config_base import (
    ApiPath,
    DialectName,
    HttpUrl,
    PositiveSeconds,
    Price,
    Rate,
    Strict,
)


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
    # The API this candidate speaks; None: each route's own (the client's request is sent as
    # it came, only `model` replaced). Another API gets the request translated, or no shadow
    # (recorded as skipped, with the reason) when it has no faithful translation.
    dialect: DialectName | None = None
    # Where this candidate serves its API, when not at the API's standard path.
    path: ApiPath | None = None
    # The output cap sent to an API that requires one (Anthropic's `max_tokens`) when the
    # client's request set none. A cap the client set is always kept.
    max_tokens: Annotated[int, Field(gt=0)] = 8192
    # Embeddings requests given as token ids go to another model only if it reads them with
    # the same tokenizer (say so here); otherwise they are skipped.
    same_tokenizer: bool = False


class SecondaryConfig(ShadowTargetConfig):
    """The primary's model asked again: its disagreement with the primary is the noise floor."""

    rate: Rate = 0.0
    api_key: SecretStr | None = None
    # Same provider as the primary, so the client's own credentials are the natural default.
    forward_client_auth: bool = True
