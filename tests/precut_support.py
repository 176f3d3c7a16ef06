"""What the request body's pre-cut tests share (`test_recorder_precut*.py`): a small cap, texts
with a plant at an offset, and the body as stored now and as the old path (scrubbed whole, then
cut) stored it."""

from __future__ import annotations

from typing import Any

import orjson
from shadowtap.exchange import Exchange
from shadowtap.recorder.caps import TextCap
from shadowtap.recorder.precut import GUARD
from shadowtap.recorder.privacy import Privacy
from shadowtap.redact import ExactSecrets

from tests.synthetic import synthetic_exchange

LIMIT = 1024  # small, so a sweep over every offset stays fast; `fitted` leaves it as it is
HIGH = GUARD * LIMIT  # where the pre-cut point is looked for first

ASCII_FILLER = "lorem ipsum dolor sit amet, consectetur adipiscing elit; "
WIDE_FILLER = "héllo wörld 日本語の文章 ünd ñ — 🙂 emoji; "


def exchange(body: bytes, credentials: tuple[str, ...] = ()) -> Exchange:
    made = synthetic_exchange(1)
    made.request_body = body
    made.request_json = None
    made.credentials = credentials
    return made


def json_body(text: str) -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})


def stored(
    made: Exchange, limit: int = LIMIT, bodies: Any = "redacted"
) -> tuple[str | None, str | None, TextCap, TextCap]:
    """The request body as stored now, and as the old path (the whole body scrubbed, then
    cut) stored it, with the caps that counted the cuts."""
    privacy = Privacy(bodies)
    secrets = ExactSecrets(made.credentials) or None
    new_cap, old_cap = TextCap(limit), TextCap(limit)
    new = privacy.request_body(made, secrets, new_cap)
    old = old_cap.json("request_body", privacy.request_body(made, secrets))
    return new, old, new_cap, old_cap


def readable(value: str | None) -> str:
    """A stored body as text to look for fragments in: a cut body is a JSON string whose value
    is the mark and the head of the body's JSON text."""
    if value is None:
        return ""
    text = orjson.loads(value) if value.startswith('"') else value
    assert isinstance(text, str)
    return text


# A whole private key early in the text: scrubbed to its placeholder it shrinks the head by
# more than the limit, so what lies at the pre-cut point ends up inside the final cut.
SHRINK_KEY = (
    " -----BEGIN PRIVATE KEY-----\n"
    + ("QUJD" * 16 + "\n") * (LIMIT * 3 // 2 // 65)
    + "-----END PRIVATE KEY----- "
)


def planted(filler: str, size: int, offset: int, plant: str, *, shrink: bool = False) -> str:
    base = (filler * (size // len(filler) + 2))[:size]
    if shrink:
        base = base[:40] + SHRINK_KEY + base[40:]
    return base[:offset] + plant + base[offset:]
