"""`embedding_similarity`: cosine similarity of the two answers' embeddings.

Both texts go, in one request, to a configured OpenAI-compatible embeddings endpoint
(`POST {url}/v1/embeddings` with `{"model", "input": [primary, target]}`); the score is the
cosine of the two vectors, with negative cosines reported as 0. Catches paraphrases that
share meaning but few words. The `api_key` is sent as `Authorization: Bearer` to that endpoint
only and never appears in scores, logs or the scorer's repr.

No request is made when the texts are equal after trimming (1.0) or one is empty (0.0; the
API rejects empty input). Inputs longer than `max_chars` are cut. Not applicable when neither
answer has text but one made tool calls. An endpoint failure is a scorer error.

    [scorers.meaning]
    type = "embedding_similarity"
    url = "https://api.openai.com"
    model = "text-embedding-3-small"
    api_key = "${OPENAI_API_KEY}"
    threshold = 0.85
"""

from __future__ import annotations

import math
from typing import Annotated

import aiohttp
from pydantic import Field, SecretStr
from shadowtap.config import HttpUrl
from shadowtap.scorers.base import IoScorer, IoScorerOptions, Pair, Result, Verdict, answer_texts
from shadowtap.scorers.upstream import UpstreamError, endpoint, post_json


class EmbeddingSimilarityOptions(IoScorerOptions):
    url: HttpUrl
    model: str
    api_key: SecretStr | None = None
    max_chars: Annotated[int, Field(gt=0)] = 16_000


def cosine(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or not a:
        raise UpstreamError(f"embeddings have different or zero lengths ({len(a)}, {len(b)})")
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    if norm == 0:
        raise UpstreamError("an embedding is the zero vector")
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / norm


class EmbeddingSimilarity(IoScorer[EmbeddingSimilarityOptions]):
    Options = EmbeddingSimilarityOptions

    def __init__(self, name: str, options: EmbeddingSimilarityOptions) -> None:
        super().__init__(name, options)
        self._url = endpoint(options.url, "/v1/embeddings")

    async def score(self, pair: Pair, session: aiohttp.ClientSession) -> Result:
        texts = answer_texts(pair)
        if texts is None:
            return None
        a, b = (t.strip()[: self.options.max_chars] for t in texts)
        if a == b:
            return 1.0
        if not a or not b:
            return 0.0
        body = {"model": self.options.model, "input": [a, b]}
        payload = await post_json(session, self._url, body, self.options.api_key)
        try:
            rows = sorted(payload["data"], key=lambda row: row["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise UpstreamError(f"{self._url} answered without data[].embedding") from None
        if len(vectors) != 2:
            raise UpstreamError(f"{self._url} returned {len(vectors)} embeddings for 2 inputs")
        similarity = cosine(vectors[0], vectors[1])
        return Verdict(min(1.0, max(0.0, similarity)), {"cosine": round(similarity, 6)})
