"""Check a JSON body against the official SDKs' own types: the strongest evidence we have that a
fixture or a rendered request has the providers' real shape."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter


def _drain(value: object) -> None:
    # pydantic validates `Iterable[...]` fields lazily: iterate them so every item is checked.
    if isinstance(value, dict):
        for item in value.values():
            _drain(item)
    elif isinstance(value, str | bytes | int | float | bool) or value is None:
        return
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _drain(getattr(value, name))
    else:
        for item in value:  # type: ignore[attr-defined]
            _drain(item)


@cache
def _adapter(sdk_type: Any) -> TypeAdapter[Any]:
    # Building the validator of an SDK union takes up to a few hundred milliseconds: once per
    # type. Kept for the run, so it outlives the draining (lazy validators refer back to it).
    return TypeAdapter(sdk_type)


def conforms(sdk_type: Any, body: object) -> Any:
    """Validate `body` as `sdk_type` (a pydantic model, TypedDict or union); raises if it is not."""
    value = _adapter(sdk_type).validate_python(body, strict=True)
    _drain(value)
    return value
