"""Review of the request body cut as it is made (caps.TextCap in rows.to_columns): at exactly
`storage.max_text_bytes`, one byte over, with multi-byte characters straddling the cut, a body
that is not JSON or is a JSON string, and secrets planted across the cut (scrubbed before it:
never half a key stored). The real writer thread into a real DuckDB file in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.synthetic import synthetic_exchange

LIMIT = 4096
CLIENT_KEY = "sk-proj-REVIEWCLIENT0123456789abcdefghij"  # the request's own credential
SHAPED_KEY = "sk-REVIEWSHAPED0123456789abcdefghijkl"  # a key's shape, not the client's
TRUNCATED = "shadowtap_record_text_truncated_total"


def with_body(i: int, body: bytes, *, credentials: tuple[str, ...] = ()) -> Exchange:
    exchange = synthetic_exchange(i)
    exchange.request_body = body
    exchange.request_json = None
    exchange.credentials = credentials
    return exchange


def record(
    tmp_path: Path, exchanges: list[Exchange], metrics: Metrics | None = None, **storage: Any
) -> dict[str, str | None]:
    """Every exchange written in one batch; their stored request bodies by request id."""
    metrics = metrics or Metrics(CollectorRegistry())
    path = tmp_path / "cut.duckdb"
    recorder = Recorder(StorageConfig(path=str(path), max_text_bytes=LIMIT, **storage), metrics)
    for exchange in exchanges:
        assert recorder.record(exchange)
    recorder.start()
    recorder.close(timeout_s=60)
    assert metrics.registry.get_sample_value("shadowtap_records_written_total") == len(exchanges)
    con = open_readonly(path)
    try:
        stored = con.execute("SELECT request_id, request_body FROM exchanges").fetchall()
    finally:
        con.close()
    return dict(stored)


def chat(content: str) -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": content}]})


def sized(total: int, unit: str = "a") -> bytes:
    """A chat body of exactly `total` bytes as the writer serializes it again (orjson)."""
    base = len(chat(""))
    return chat(unit * (total - base))


def assert_cut(stored: str | None, original: int) -> str:
    assert stored is not None
    assert len(stored.encode("utf-8")) <= LIMIT
    text = orjson.loads(stored)  # still valid JSON: a string, never the object it was
    assert isinstance(text, str)
    assert text.startswith(f"[TRUNCATED: {original} bytes, the first ")
    kept = int(text.split("the first ", 1)[1].split(" ", 1)[0])
    head = text.split("kept] ", 1)[1]
    assert len(head.encode("utf-8")) == kept  # the marker tells the truth about the head
    return head


def test_a_body_of_exactly_the_cap_is_whole_and_one_byte_over_is_cut(tmp_path: Path) -> None:
    at, over = with_body(1, sized(LIMIT)), with_body(2, sized(LIMIT + 1))
    assert len(at.request_body) == LIMIT and len(over.request_body) == LIMIT + 1
    metrics = Metrics(CollectorRegistry())
    stored = record(tmp_path, [at, over], metrics)
    # Counted once: cut as it was made, not again by the batch's cap after.
    assert metrics.registry.get_sample_value(TRUNCATED, {"field": "request_body"}) == 1
    assert stored[at.request_id] is not None
    assert stored[at.request_id].encode() == bytes(at.request_body)
    head = assert_cut(stored[over.request_id], LIMIT + 1)
    assert bytes(over.request_body).decode().startswith(head)


def test_multi_byte_characters_straddling_the_cut_never_leave_half_a_character(
    tmp_path: Path,
) -> None:
    exchanges = []
    for shift, unit in enumerate(["é", "€", "😀", "a€", "a😀", "ab😀", "\u0000😀"]):
        body = chat("x" * shift + unit * (LIMIT // len(unit.encode()) + 8))
        exchanges.append(with_body(shift, body))
    stored = record(tmp_path, exchanges)
    for exchange in exchanges:
        original = len(orjson.dumps(orjson.loads(exchange.request_body)))
        head = assert_cut(stored[exchange.request_id], original)
        assert "\ufffd" not in head  # no character was cut in two and replaced
        assert orjson.dumps(orjson.loads(exchange.request_body)).decode().startswith(head)


def test_keys_planted_across_the_cut_are_scrubbed_before_it(tmp_path: Path) -> None:
    # Each key starts a few bytes before the cut, at every offset the key spans: were the cut
    # made first, the head would end with the key's first bytes, which no scrubbing finds.
    exchanges = []
    for offset in range(0, len(CLIENT_KEY) + 80, 3):
        filler = "w" * (LIMIT - 200 - offset)
        content = f"{filler} {CLIENT_KEY} and {SHAPED_KEY} " + "z" * 600
        exchanges.append(with_body(offset, chat(content), credentials=(CLIENT_KEY,)))
    stored = record(tmp_path, exchanges)
    for exchange in exchanges:
        body = stored[exchange.request_id]
        assert body is not None and len(body.encode()) <= LIMIT
        for key in (CLIENT_KEY, SHAPED_KEY):
            assert key[3:11] not in body, (exchange.request_id, body[-200:])


def test_a_body_that_is_not_json_or_a_json_string_is_cut_as_text(tmp_path: Path) -> None:
    plain = with_body(1, b"not json: " + ("\u00e9" * LIMIT).encode() + f" {CLIENT_KEY}".encode())
    plain.credentials = (CLIENT_KEY,)
    string = with_body(2, orjson.dumps("a JSON string " + "q" * LIMIT))
    broken = with_body(3, b'{"messages": [' + b"1," * LIMIT)  # cut-off JSON
    invalid = with_body(4, b"\xff\xfe" * LIMIT)  # not UTF-8
    stored = record(tmp_path, [plain, string, broken, invalid])
    for exchange in (plain, string, broken, invalid):
        body = stored[exchange.request_id]
        assert body is not None and len(body.encode()) <= LIMIT
        assert isinstance(orjson.loads(body), str)
        assert "[TRUNCATED:" in body
    assert CLIENT_KEY[3:11] not in str(stored[plain.request_id])


def test_the_cap_holds_when_bodies_are_kept_in_full(tmp_path: Path) -> None:
    big = with_body(1, sized(LIMIT * 4, "\u00e9"))
    stored = record(tmp_path, [big], bodies="full")
    assert_cut(stored[big.request_id], len(big.request_body))


async def test_through_the_proxy_the_clients_key_pasted_across_the_cut_never_reaches_the_file(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> None:
    # The official client sends its key in Authorization; a user pasted the same key into the
    # prompt where the stored body is cut. Bodies of exactly the cap and one byte over too.
    primary, candidate = await start_fake(), await start_fake()
    db = tmp_path / "proxy.duckdb"
    storage = {"enabled": True, "path": str(db), "flush_interval_ms": 50, "max_text_bytes": LIMIT}
    server = await start_shadowtap(make_config(primary, {"small": candidate}, storage=storage))
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.proxy_port}/v1", api_key=CLIENT_KEY
    )
    base = len(chat(""))  # what the writer serializes for a chat of one user message
    contents = [
        f"{'p' * (LIMIT - 60 - base - offset)} {CLIENT_KEY} " + "q" * 200
        for offset in range(0, 48, 4)
    ]
    contents += ["a" * (LIMIT - base), "a" * (LIMIT - base + 1)]
    try:
        for content in contents:
            answer = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": content}]
            )
            assert answer.choices[0].message.content  # production's answer, untouched
        await server.shadow_tasks.wait(30)
        await server.exchange_tasks.wait(60)
    finally:
        await client.close()
        await server.stop()
    con = open_readonly(db)
    try:
        bodies = [row[0] for row in con.execute("SELECT request_body FROM exchanges").fetchall()]
    finally:
        con.close()
    assert len(bodies) == len(contents)
    for body in bodies:
        assert len(body.encode()) <= LIMIT
        assert CLIENT_KEY[3:11] not in body
    whole = [orjson.loads(b) for b in bodies if isinstance(orjson.loads(b), dict)]
    assert [m["messages"][0]["content"] for m in whole] == ["a" * (LIMIT - base)]
