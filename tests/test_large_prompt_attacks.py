"""1 MB prompts built to break the one-copy path, sent through the running proxy: multi-byte
UTF-8, escaped JSON (`\\u00e9`, and the client's key spelled with escapes), nesting deeper
than orjson writes back, a key near the head and one at the very end. For each: the primary
gets the client's bytes, the candidate the same request with only its model replaced, and
the stored body is redacted (over its whole length, or over a head cut first at a point no
secret straddles, `recorder/precut.py`), then cut (the marker counts the redacted text's bytes,
and a pre-cut tail's as sent), with no trace of the key. Real fakes on loopback, a real
DuckDB file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from shadowtap.recorder import open_readonly

from tests.conftest import StartFake, StartShadowtap, make_config

KEY = "tok3n-LARGEPROMPT-0123456789abcdefghijklmnopqrstuv"  # the client's, of no known shape
PLACEHOLDER = "[REDACTED:credential]"
MB = 1_000_000


def escaped(text: str) -> str:
    """`text` with every character spelled as a JSON \\u escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def body_of(kind: str) -> bytes:
    """About 1 MB of request, the client's key near the head and at the very end."""
    if kind == "utf8":
        filler = "é€😀 " * (MB // 10)
        content = f"key {KEY} then {filler} and last {KEY}"
        return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": content}]})
    if kind == "escaped":
        filler = "\\u00e9" * (MB // 6)
        content = f"key {escaped(KEY)} then {filler} and last {escaped(KEY)}"
        return b'{"model":"m","messages":[{"role":"user","content":"%s"}]}' % content.encode()
    assert kind == "nested"  # 300 lists deep: orjson reads it, but writes back only 255
    content = f'"key {KEY} then {"x" * MB} and last {KEY}"'
    nested = "[" * 300 + content + "]" * 300
    return b'{"model":"m","messages":[{"role":"user","content":%s}]}' % nested.encode()


async def send(url: str, body: bytes) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


@pytest.mark.parametrize("kind", ["utf8", "escaped", "nested"])
async def test_a_hostile_1mb_prompt_is_sent_once_rewritten_redacted_then_cut(
    kind: str, start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    db = tmp_path / "shadowtap.duckdb"
    config = make_config(
        primary,
        {"small": {"url": candidate.url, "model": "cand"}},
        storage={"enabled": True, "path": str(db), "flush_interval_ms": 50},
    )
    server = await start_shadowtap(config)
    body = body_of(kind)
    await send(f"http://127.0.0.1:{server.proxy_port}/v1/chat/completions", body)
    await server.stop()

    [to_primary] = primary.chat_requests()
    assert to_primary.body == body  # the client's bytes, untouched
    [to_candidate] = candidate.chat_requests()
    assert to_candidate.json == {**orjson.loads(body), "model": "cand"}

    con = open_readonly(db)
    try:
        [(stored,)] = con.execute("SELECT request_body FROM exchanges").fetchall()
    finally:
        con.close()
    value = orjson.loads(stored)  # a JSON string: the marker, then the head of the text
    assert isinstance(value, str) and len(stored.encode()) <= 128 * 1024
    marker, _, head = value.partition("] ")
    assert KEY not in stored and KEY[:12] not in stored
    assert PLACEHOLDER in head  # the key near the head, scrubbed before the cut
    if kind == "nested":
        # Past orjson's writing depth the raw text is stored (as a JSON string), scrubbed
        # of the key everywhere (its end dropped by the pre-cut, and counted as sent).
        whole = orjson.dumps(body.decode().replace(KEY, PLACEHOLDER, 1)).decode()
    else:
        # The request as read (escapes decoded), the key replaced at both ends; the prose of
        # "utf8" is cut before it is scrubbed, and its dropped tail counted as sent.
        whole = orjson.dumps(orjson.loads(body)).decode()
        whole = whole.replace(KEY, PLACEHOLDER, 1 if kind == "utf8" else -1)
        assert head.startswith('{"model":"m","messages":[{"role":"user","content":"key ')
    assert marker == f"[TRUNCATED: {len(whole.encode())} bytes, the first {len(head.encode())} kept"
    assert whole.startswith(head)
