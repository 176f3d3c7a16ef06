"""Reading and writing wire JSON for the dialect parsers and renderers: checked access that
turns a body of the wrong shape into `Untranslatable` (naming the field, never its value).

A request the primary will reject anyway is not worth translating, so parsers do not try to
repair shapes; they only refuse cleanly instead of raising `KeyError` or `TypeError`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
from shadowtap.dialects.neutral import Untranslatable

_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def api_word(value: object) -> str:
    """A type or field name from the client, fit for a reason only if it looks like an API word."""
    return value if isinstance(value, str) and _FIELD_NAME.fullmatch(value) else "unexpected"


def unportable_field(where: str, name: str) -> str:
    """The reason for a field without a translation. API field names are short snake_case;
    anything else (a key that is really a credential, say) is not repeated."""
    if _FIELD_NAME.fullmatch(name):
        return f"{where}{name!r} has no faithful translation"
    return f"{where}an unexpected field has no faithful translation"


def as_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Untranslatable(f"{where} is not a list")
    return value


def as_dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Untranslatable(f"{where} is not an object")
    return value


def as_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise Untranslatable(f"{where} is not a string")
    return value


def optional_str(value: object, where: str) -> str | None:
    return None if value is None else as_str(value, where)


def optional_number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Untranslatable(f"{where} is not a number")
    return float(value)


def optional_int(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Untranslatable(f"{where} is not an integer")
    return value


def optional_bool(value: object, where: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise Untranslatable(f"{where} is not a boolean")
    return value


def arguments_text(value: object) -> str:
    """A tool call's arguments as JSON text (Anthropic sends an object, OpenAI a string)."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise Untranslatable("tool call arguments cannot be encoded") from None


def arguments_object(text: str) -> dict[str, Any]:
    """The arguments as an object, for a dialect that carries them parsed (Anthropic)."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        raise Untranslatable("tool call arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise Untranslatable("tool call arguments are not a JSON object")
    return value


def split_data_url(url: str) -> tuple[str, str] | None:
    """`data:image/png;base64,AAAA` → ("image/png", "AAAA"); None for any other URL."""
    head, comma, data = url.partition(",")
    if not url.startswith("data:") or not comma or not head.endswith(";base64"):
        return None
    return head[len("data:") : -len(";base64")], data


def text_or_none(texts: list[str]) -> str | None:
    """Parts as one string when there is exactly one; None tells the caller to send parts."""
    return texts[0] if len(texts) == 1 else None
