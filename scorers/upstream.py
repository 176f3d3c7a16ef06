"""Calls to OpenAI-compatible endpoints made by scorers (embeddings, judges).

The api key goes into the Authorization header and nowhere else: errors raised here name the
URL and the HTTP status, never headers or the key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import SecretStr

# A judge's verdict, or two embeddings (two 3072-dimension vectors are ~150 KiB of JSON), is
# far smaller: an answer longer than this is not one, and is not read on (nor held).
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class UpstreamError(Exception):
    """A scorer's upstream call failed; the scorer reports it as a scorer error."""


def endpoint(url: str, path: str) -> str:
    """`url` as configured: a base (`http://host:8001`, `https://api.x.com/v1`) gets the
    OpenAI path appended; a URL already ending in the path is used as is.

    Example: `endpoint("http://h:1/v1", "/v1/embeddings") == "http://h:1/v1/embeddings"`.
    """
    url = url.rstrip("/")
    leaf = path.removeprefix("/v1")
    current = urlsplit(url).path
    if current.endswith(leaf):
        return url
    if current.endswith("/v1"):
        return url + leaf
    return url + path


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    api_key: SecretStr | None,
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
    try:
        async with session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                raise UpstreamError(f"{url} answered HTTP {response.status}")
            payload = orjson.loads(await _body_within(response, url))
    except aiohttp.ClientError as error:
        raise UpstreamError(f"{url}: {type(error).__name__}: {error}") from None
    except ValueError:
        raise UpstreamError(f"{url} answered with a body that is not JSON") from None
    if not isinstance(payload, dict):
        raise UpstreamError(f"{url} answered with JSON that is not an object")
    return payload


async def _body_within(response: aiohttp.ClientResponse, url: str) -> bytearray:
    """The answer's body, or UpstreamError once it passes `MAX_ANSWER_BYTES` (an endless
    answer): its connection, left with unread bytes, is dropped when the response is let go.
    (Parsed as it is, by orjson: no copy, and nesting past its depth limit is "not JSON" where
    json.loads raised RecursionError.)"""
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise UpstreamError(f"{url} answered more than {MAX_ANSWER_BYTES} bytes")
    return body
