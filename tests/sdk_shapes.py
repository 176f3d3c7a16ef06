"""Check a JSON body against the official SDKs' own types: the strongest evidence we have that a
fixture or a rendered request has the providers' real shape."""

from __future__ import annotations

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


def conforms(sdk_type: Any, body: object) -> Any:
    """Validate `body` as `sdk_type` (a pydantic model, TypedDict or union); raises if it is not."""
    adapter = TypeAdapter(sdk_type)  # alive while draining: lazy validators refer back to it
    value = adapter.validate_python(body, strict=True)
    _drain(value)
    return value
