"""Reading JSON out of a model's answer: models often wrap it in a Markdown code fence."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```$", re.DOTALL)


def parse_json_answer(text: str | None) -> Any:
    """The JSON value in an answer (a bare value or one ```json fenced block).

    Raises ValueError when there is none, so callers decide what "not JSON" means for them.
    """
    body = (text or "").strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body:
        raise ValueError("empty answer")
    return json.loads(body)  # JSONDecodeError is a ValueError


def canonical_json(value: Any) -> str:
    """One spelling per JSON value (sorted keys), so reordered objects compare equal."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
