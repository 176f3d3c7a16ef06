"""`openai-embeddings` (`POST /v1/embeddings`): what a request embeds, and an answer's vectors.

A request's `input` is a string, a list of strings, one token array or a list of token arrays;
`parse` reads it into an `EmbeddingsRequest` without changing it. Token ids belong to the
requested model's tokenizer, so `render` refuses to send them to another model unless the
caller vouches for the same tokenizer.

An answer's `data[].embedding` is a list of floats (`encoding_format: "float"`) or base64 of
little-endian float32 (`"base64"`, what the official Python client asks for by default); both
become `Completion.embeddings` (one `array` per input, in `index` order), `prompt_tokens` the
usage. Work is bounded: an answer with more than `MAX_VALUES` numbers is an error before any
vector is built.

Example:
    request = parse({"model": "text-embedding-3-small", "input": ["a", "b"]})
    completion = completion_from_json(body, 200)
    len(completion.embeddings) == 2
"""

from __future__ import annotations

import binascii
import math
import sys
from array import array
from dataclasses import dataclass
from typing import Any, Literal

from shadowtap.completion import Completion
from shadowtap.dialects.answer import BadShape, error_message, int_or_none, load_json
from shadowtap.dialects.neutral import Untranslatable
from shadowtap.dialects.wire import as_list, optional_int, optional_str

MAX_VALUES = 4_000_000  # numbers one answer may hold (a 16 MB float answer has under 1 M)
_FLOAT32 = 4
_FORMATS = ("float", "base64")


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    model: str | None
    inputs: list[str] | list[list[int]]
    kind: Literal["text", "tokens"]
    single: bool  # `input` was one string or one token array, not a list of them
    encoding_format: str | None = None
    dimensions: int | None = None

    @property
    def count(self) -> int:
        return len(self.inputs)


def parse(body: dict[str, Any]) -> EmbeddingsRequest:
    """The inputs of an embeddings request; `Untranslatable` when `input` is not one of the
    four shapes the API takes (or is empty).

    Example: `parse({"model": "m", "input": [[1, 2], [3]]}).kind == "tokens"`
    """
    value = body.get("input")
    fmt = optional_str(body.get("encoding_format"), "encoding_format")
    if fmt is not None and fmt not in _FORMATS:
        raise Untranslatable("encoding_format is neither float nor base64")
    model = optional_str(body.get("model"), "model")
    dimensions = optional_int(body.get("dimensions"), "dimensions")
    inputs, kind, single = _read_input(value)
    return EmbeddingsRequest(model, inputs, kind, single, fmt, dimensions)


def _read_input(value: object) -> tuple[list[Any], Literal["text", "tokens"], bool]:
    if isinstance(value, str):
        return [value], "text", True
    items = as_list(value, "input")
    if not items:
        raise Untranslatable("input is empty")
    if all(isinstance(item, str) for item in items):
        return items, "text", False
    if all(_is_token_id(item) for item in items):
        return [items], "tokens", True
    if all(isinstance(item, list) and item and all(map(_is_token_id, item)) for item in items):
        return items, "tokens", False
    raise Untranslatable("input is not text, token ids, or a list of either")


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def render(
    request: EmbeddingsRequest, model: str | None, same_tokenizer: bool = False
) -> dict[str, Any]:
    """The request for `model` (None: the requested one), inputs exactly as the client sent.

    Token ids go to another model only when `same_tokenizer` says that model reads them the
    same way (e.g. OpenAI's embedding models, all on cl100k_base); otherwise the other model
    would embed different text: `Untranslatable`.
    """
    target = model or request.model
    if request.kind == "tokens" and target != request.model and not same_tokenizer:
        raise Untranslatable("token-id input is specific to the requested model's tokenizer")
    body: dict[str, Any] = {"input": request.inputs[0] if request.single else request.inputs}
    if target is not None:
        body["model"] = target
    if request.encoding_format is not None:
        body["encoding_format"] = request.encoding_format
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def completion_from_json(body: bytes, status: int, values: int | None = None) -> Completion:
    """An embeddings answer: vectors in `embeddings`, usage in `prompt_tokens`. It is bounded
    by `MAX_VALUES` (`values`, the general bound on one parse, does not apply: a float answer
    holds a million numbers), and takes up to ~0.5 s for a large answer, so the proxy parses
    it off the event loop (`Dialect.off_loop`)."""
    del values
    if body.count(b",") >= MAX_VALUES:  # bound the work before parsing builds the numbers
        return Completion(status=status, error=f"answer holds more than {MAX_VALUES} values")
    completion, payload = load_json(body, status, bounded=False)
    if payload is None:
        return completion
    try:
        _fill(completion, payload)
    except BadShape as exc:
        completion.error = f"invalid response body: {exc}"
    return completion


def _fill(completion: Completion, payload: object) -> None:
    if not isinstance(payload, dict):
        raise BadShape("not a JSON object")
    message = error_message(payload)
    if message is not None:
        completion.error = message
        return
    rows = payload.get("data")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise BadShape("data is not a list of objects")
    indices = [int_or_none(row.get("index")) for row in rows]
    if sorted(i for i in indices if i is not None) != list(range(len(rows))):
        raise BadShape("data[].index is not 0..n-1")
    vectors: list[array[float]] = [array("d")] * len(rows)
    total = 0
    for row, index in zip(rows, indices, strict=True):
        vector = _vector(row.get("embedding"), f"data[{index}].embedding")
        total += len(vector)
        if total > MAX_VALUES:
            raise BadShape(f"more than {MAX_VALUES} values")
        vectors[index] = vector  # type: ignore[index]
    completion.embeddings = vectors
    usage = payload.get("usage")
    if isinstance(usage, dict):
        completion.prompt_tokens = int_or_none(usage.get("prompt_tokens"))
    model = payload.get("model")
    completion.response_model = model if isinstance(model, str) and model else None


def _vector(value: object, where: str) -> array[float]:
    if isinstance(value, str):
        try:
            raw = binascii.a2b_base64(value, strict_mode=True)
        except binascii.Error:
            raise BadShape(f"{where} is not base64") from None
        if len(raw) % _FLOAT32:
            raise BadShape(f"{where} is not a whole number of float32 values")
        vector = array("f")
        vector.frombytes(raw)
        if sys.byteorder == "big":
            vector.byteswap()  # the wire order is little-endian
    elif isinstance(value, list):
        try:
            vector = array("d", value)
        except TypeError:
            raise BadShape(f"{where} holds something other than numbers") from None
    else:
        raise BadShape(f"{where} is neither a list of floats nor base64")
    if not vector:
        raise BadShape(f"{where} is empty")
    # One C pass: a NaN or an infinity makes the sum NaN or infinite (so does a sum of values
    # near the float limit, which no embedding has).
    if not math.isfinite(sum(vector)):
        raise BadShape(f"{where} holds a value that is not finite")
    return vector


class EmbeddingsAssembler:
    """Embeddings are never streamed: an answer labelled as an event stream is read whole as
    JSON, so a mislabelled answer is read (or reported) the same way. The caller's answer cap
    (`AnswerReader`) bounds what is held."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def feed(self, chunk: bytes) -> bool:
        self._chunks.append(chunk)
        return False

    def finish(self, status: int) -> Completion:
        return completion_from_json(b"".join(self._chunks), status)
