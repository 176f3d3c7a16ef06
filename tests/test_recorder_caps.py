"""`storage.max_text_bytes`: a stored text past the cap is cut after redaction, marked so no
reader takes it for the whole text, and counted; under the cap (or with 0) it is stored whole.
Real DuckDB files in tmp_path, the real writer thread, and the running proxy end to end."""

from __future__ import annotations

import os
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import Completion, ToolCall
from shadowtap.config import ConfigError, StorageConfig, parse_config
from shadowtap.exchange import Exchange, Score
from shadowtap.export.rows import ExportQuery, read_rows
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, connect, open_readonly
from shadowtap.recorder.caps import fitted
from shadowtap.recorder.privacy import Privacy
from shadowtap.replay.source import Relations, Selection, make_plan

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import post
from tests.synthetic import synthetic_exchange
from tests.waiting import wait_for

KIB = 1024
CAP = 128 * KIB  # the default
TRUNCATED = "shadowtap_record_text_truncated_total"
CANARY_KEY = "sk-proj-CAPCANARY0123456789abcdefghij"


def record(tmp_path: Path, exchanges: list[Exchange], **storage: Any) -> Metrics:
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(tmp_path / "caps.duckdb"), **storage)
    recorder = Recorder(config, metrics)
    for exchange in exchanges:
        assert recorder.record(exchange)
    recorder.start()
    recorder.close(timeout_s=60)
    assert metrics.registry.get_sample_value("shadowtap_records_written_total") == len(exchanges)
    return metrics


def read(tmp_path: Path, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    con = open_readonly(tmp_path / "caps.duckdb")
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def cut(metrics: Metrics, field: str) -> float:
    return metrics.registry.get_sample_value(TRUNCATED, {"field": field}) or 0.0


def big(i: int, text: str, *, secret_at: int | None = None) -> Exchange:
    """An exchange whose prompt, every answer, tool arguments, error and score detail are
    `text`; the client's key is planted at `secret_at` in the prompt."""
    exchange = synthetic_exchange(i)
    prompt = text
    if secret_at is not None:
        prompt = text[:secret_at] + CANARY_KEY + text[secret_at:]
        exchange.credentials = (CANARY_KEY,)
    exchange.request_body = orjson.dumps({"model": "m", "messages": [{"content": prompt}]})
    exchange.request_json = None
    for result in exchange.results.values():
        result.completion = Completion(
            status=200,
            text=text,
            error=text,
            tool_calls=[ToolCall(name="t", arguments=text, id="c1")],
            latency_s=0.1,
        )
    exchange.scores = [Score("small", "similarity", 0.5, detail={"quote": text})]
    return exchange


def test_texts_over_the_cap_are_cut_marked_and_counted_per_field(tmp_path: Path) -> None:
    text = os.urandom(512 * KIB).hex()  # 1 MiB per field, nothing redaction shrinks
    exchange = big(1, text)
    metrics = record(tmp_path, [exchange])
    [(body, body_type)] = read(
        tmp_path,
        "SELECT request_body, json_type(request_body) FROM exchanges WHERE request_id = ?",
        [exchange.request_id],
    )
    # The body is no longer the request: a JSON string, so readers never replay half of it.
    assert body_type == "VARCHAR" and len(body.encode()) <= CAP
    original = orjson.dumps(orjson.loads(exchange.request_body)).decode()
    marker, _, head = orjson.loads(body).partition("] ")
    assert marker == f"[TRUNCATED: {len(original)} bytes, the first {len(head)} kept"
    assert original.startswith(head) and len(head) > CAP - 200
    rows = read(
        tmp_path,
        "SELECT text, error, tool_calls FROM responses WHERE request_id = ?",
        [exchange.request_id],
    )
    assert len(rows) == 3
    for answer, error, calls in rows:
        for value in (answer, error):
            head, _, mark = value.partition("\n[TRUNCATED: ")
            assert text.startswith(head) and len(value.encode()) <= CAP
            assert mark == f"{len(text)} bytes, the first {len(head)} kept]"
        [call] = orjson.loads(calls)  # still a list of calls, the arguments cut
        assert call["name"] == "t" and "\n[TRUNCATED: " in call["arguments"]
        assert len(calls.encode()) <= CAP
    [(detail,)] = read(tmp_path, "SELECT detail FROM scores", [])
    assert orjson.loads(detail).startswith("[TRUNCATED: ")
    counted = {f: cut(metrics, f) for f in ("request_body", "text", "error", "tool_calls")}
    assert counted == {"request_body": 1, "text": 3, "error": 3, "tool_calls": 3}
    assert cut(metrics, "detail") == 1


def test_at_the_cap_a_text_is_whole_and_one_byte_more_is_cut(tmp_path: Path) -> None:
    exact, over = synthetic_exchange(1), synthetic_exchange(2)
    for exchange, size in ((exact, 4 * KIB), (over, 4 * KIB + 1)):
        exchange.results["small"].completion = Completion(status=200, text="a" * size)
    metrics = record(tmp_path, [exact, over], max_text_bytes=4 * KIB)
    texts = dict(
        read(tmp_path, "SELECT request_id, text FROM responses WHERE target = 'small'", [])
    )
    assert texts[exact.request_id] == "a" * 4 * KIB
    head, _, mark = texts[over.request_id].partition("\n[TRUNCATED: ")
    assert head == "a" * len(head) and mark == f"{4 * KIB + 1} bytes, the first {len(head)} kept]"
    assert len(texts[over.request_id].encode()) == 4 * KIB  # the marker fills it to the cap
    assert cut(metrics, "text") == 1


def test_a_cut_never_splits_a_character_and_stays_valid_utf8(tmp_path: Path) -> None:
    exchange = synthetic_exchange(1)
    exchange.results["small"].completion = Completion(status=200, text="é€😀" * 2_000)
    record(tmp_path, [exchange], max_text_bytes=4 * KIB + 3)
    [(text,)] = read(tmp_path, "SELECT text FROM responses WHERE target = 'small'", [])
    head = text.partition("\n[TRUNCATED:")[0]
    assert ("é€😀" * 2_000).startswith(head) and len(text.encode()) <= 4 * KIB + 3


def test_a_secret_at_the_cut_is_scrubbed_before_the_cut(tmp_path: Path) -> None:
    # Cutting first would leave half a key that matches neither the exact value nor its shape.
    text = "x" * (2 * CAP)
    exchange = big(1, text, secret_at=CAP - 250)
    record(tmp_path, [exchange])
    raw = (tmp_path / "caps.duckdb").read_bytes()
    assert CANARY_KEY[:12].encode() not in raw


def test_texts_cut_at_the_default_cap_share_duckdbs_blocks(tmp_path: Path) -> None:
    # Until a checkpoint, DuckDB keeps each long string whole in a 256 KiB overflow block, as
    # many to a block as fit: texts cut to exactly 128 KiB took a block each, twice their size.
    text = os.urandom(256 * KIB).hex()  # 512 KiB in every capped field: each one is cut
    exchanges = [big(i, text) for i in range(4)]
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(StorageConfig(path=str(tmp_path / "caps.duckdb")), metrics)
    recorder.start()
    try:
        for exchange in exchanges:
            assert recorder.record(exchange)
        wait_for(
            lambda: metrics.registry.get_sample_value("shadowtap_records_written_total") == 4,
            timeout_s=60,
        )
        # Read before close(): its checkpoint writes the strings out and frees the blocks.
        [usage] = recorder.query(
            "SELECT memory_usage_bytes AS held FROM duckdb_memory() WHERE tag = 'OVERFLOW_STRINGS'"
        )
        [stored] = recorder.query(
            "SELECT sum(strlen(request_body::VARCHAR)) AS size FROM exchanges"
        )
    finally:
        recorder.close(timeout_s=60)
    fields = ("request_body", "text", "error", "tool_calls", "detail")
    texts = sum(cut(metrics, field) for field in fields)
    assert texts == 4 * 11  # a body, 3 answers, 3 errors, 3 tool calls and a detail each
    assert stored["size"] > 4 * (CAP - 64)  # the cut keeps all but a few bytes of the cap
    assert usage["held"] <= texts * CAP * 1.05  # not texts * 256 KiB


@pytest.mark.parametrize(
    ("limit", "size"),
    [
        (128 * KIB, 131_040),  # the default: two cut texts to a 256 KiB block
        (131_040, 131_040),
        (131_041, 131_040),
        (133_087, 131_040),  # the last limit brought down to half a block
        (133_088, 133_088),  # further over: the cut would lose more than the packing saves
        (87_361, 87_360),  # a third of a block
        (66 * 1000, 65_520),  # a quarter
        (4 * KIB, 4 * KIB),  # short texts are stored inline, never in overflow blocks
        (1024 * KIB, 1024 * KIB),
    ],
)
def test_a_cut_is_fitted_to_a_share_of_duckdbs_block_only_just_under_the_limit(
    limit: int, size: int
) -> None:
    assert fitted(limit) == size
    assert size <= limit and limit - size <= limit // 64


def test_zero_keeps_every_text_whole(tmp_path: Path) -> None:
    text = os.urandom(256 * KIB).hex()  # 512 KiB
    exchange = big(1, text)
    metrics = record(tmp_path, [exchange], max_text_bytes=0)
    [(body,)] = read(tmp_path, "SELECT request_body FROM exchanges", [])
    assert orjson.loads(body)["messages"][0]["content"] == text
    assert {row[0] for row in read(tmp_path, "SELECT text FROM responses", [])} == {text}
    assert cut(metrics, "request_body") == cut(metrics, "text") == 0


@pytest.mark.parametrize("value", [-1, 1, 1023, "lots", 1.5])
def test_a_cap_with_no_room_for_the_marker_stops_the_start(value: object) -> None:
    raw = {"primary": {"url": "http://127.0.0.1:9"}, "storage": {"max_text_bytes": value}}
    with pytest.raises(ConfigError, match=r"^config error: storage\.max_text_bytes: "):
        parse_config(raw, {})


async def test_a_1mb_prompt_through_the_proxy_is_stored_cut_and_read_back(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> None:
    """A 1 MB prompt (under sampling.max_body_bytes) is sampled, answered by fakes that echo
    it, and recorded: the client gets the primary's whole answer, the file the cut texts."""
    primary, candidate = await start_fake(), await start_fake()
    db = tmp_path / "shadowtap.duckdb"
    config = make_config(
        primary,
        {"good": candidate},
        storage={"enabled": True, "path": str(db), "flush_interval_ms": 50},
    )
    registry = CollectorRegistry()
    server = await start_shadowtap(config, registry)
    prompt = "word " * 200_000
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    status, raw = await post(server.proxy_port, body)
    assert status == 200
    answer = orjson.loads(raw)["choices"][0]["message"]["content"]
    assert prompt in answer  # the production answer is untouched by the cap
    await server.stop()
    con = open_readonly(db)
    try:
        [(stored_body, primary_text, candidate_text)] = con.execute(
            "SELECT request_body, primary_text, candidate_text FROM pairs"
        ).fetchall()
    finally:
        con.close()
    assert orjson.loads(stored_body).startswith("[TRUNCATED: ")
    for text in (primary_text, candidate_text):
        assert answer.startswith(text.partition("\n[TRUNCATED: ")[0])
        assert f"[TRUNCATED: {len(answer.encode())} bytes, the first " in text
    assert registry.get_sample_value(TRUNCATED, {"field": "request_body"}) == 1
    assert registry.get_sample_value(TRUNCATED, {"field": "text"}) == 2


def test_replay_and_export_leave_cut_requests_and_answers_out_and_count_them(
    tmp_path: Path,
) -> None:
    """A cut body is not the request, a cut primary answer not the answer: replay must not
    send or score against them, export must not teach from them; each is counted."""
    cut_body = big(1, os.urandom(256 * KIB).hex())
    cut_answer = synthetic_exchange(2)
    long_answer = os.urandom(256 * KIB).hex()
    cut_answer.results["primary"].completion = Completion(status=200, text=long_answer)
    whole = synthetic_exchange(3)
    record(tmp_path, [cut_body, cut_answer, whole])

    con = connect(tmp_path / "caps.duckdb")
    try:
        plan = make_plan(con, Relations.local(), "newcomer", Selection())
        assert plan.skipped["truncated"] == 2 and plan.to_send == 1
        left_out: Counter[str] = Counter()
        rows = list(read_rows(con, ExportQuery(), Privacy("redacted"), left_out))
    finally:
        con.close()
    assert [row.request_id for row in rows] == [whole.request_id]
    assert left_out == {"truncated": 2}


def test_the_writer_never_holds_a_whole_copy_of_a_body_it_cuts(tmp_path: Path) -> None:
    """40 queued 1 MiB prompts, written in one batch: the writer makes each stored body anew
    (parsed, redacted, serialized again) and, cutting it to the cap as soon as it is made,
    holds one such copy at a time (plus what orjson allocates to parse and write one: ~17 MiB
    for 1 MiB) and the cut heads. Cut after the batch's column held every row's whole text
    (and a join of the column checked its Unicode), it held 40 MiB of copies, then 40 more.
    Counted in bytes by tracemalloc (the writer thread's Python allocations), not in RSS."""
    count = 40
    # 1 MiB that redaction leaves as it is (hex would look like phone numbers to it, whose
    # substitution, one row at a time, is not what this measures)
    text = "prompt " * (1024 * KIB // 7)
    exchanges = [big(i, "") for i in range(count)]
    for exchange in exchanges:
        exchange.request_body = orjson.dumps({"model": "m", "messages": [{"content": text}]})
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(tmp_path / "caps.duckdb"), batch_max_bytes=256 * 1024 * KIB)
    recorder = Recorder(config, metrics)
    for exchange in exchanges:
        assert recorder.record(exchange)
    del exchanges, text
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        recorder.start()
        recorder.close(timeout_s=60)
        extra = tracemalloc.get_traced_memory()[1] - held
    finally:
        if not tracing:
            tracemalloc.stop()
    assert metrics.registry.get_sample_value("shadowtap_records_written_total") == count
    assert cut(metrics, "request_body") == count
    # Less than one whole copy of the batch's bodies (new: ~25 MiB; before: 80 MiB).
    assert extra < count * 1024 * KIB, f"{extra / KIB / 1024:.1f} MiB"
