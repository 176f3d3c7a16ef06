"""Odd but accepted input is recorded faithfully: no value a client, an upstream or a scorer
plug-in can produce costs the exchange its row. Real DuckDB file, real writer thread."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import ToolCall
from shadowtap.config import StorageConfig
from shadowtap.exchange import Exchange
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly
from shadowtap.recorder.privacy import MODEL_MAX_CHARS

from tests.synthetic import synthetic_exchange


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def record_all(tmp_path: Path, exchanges: list[Exchange], bodies: str = "redacted") -> Metrics:
    metrics = Metrics(CollectorRegistry())
    config = StorageConfig(path=str(tmp_path / "h.duckdb"), bodies=bodies)  # type: ignore[arg-type]
    recorder = Recorder(config, metrics)
    for exchange in exchanges:
        assert recorder.record(exchange)
    recorder.start()  # all in one batch: one odd exchange must not even need the one-by-one path
    recorder.close()
    return metrics


def stored(tmp_path: Path, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    con = open_readonly(tmp_path / "h.duckdb")
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def assert_all_written(metrics: Metrics, count: int) -> None:
    sample = metrics.registry.get_sample_value
    assert sample("shadowtap_record_write_errors_total") == 0
    assert sample("shadowtap_records_written_total") == count


MODELS: list[tuple[Any, str | None]] = [
    ("gpt-4o", "gpt-4o"),
    (42, "42"),
    (3.5, "3.5"),
    (True, "true"),
    (None, None),
    ([1, "a"], '[1,"a"]'),
    ({"name": {"deep": [None]}}, '{"name":{"deep":[null]}}'),
    ("", ""),
    ("m" * 100_000, "m" * MODEL_MAX_CHARS),
    (2**70, str(2**70)),  # past 64 bits: orjson cannot write it, repr can
    (nested(300), None),  # past orjson's depth: kept as its (capped) repr
]


def test_a_model_of_any_json_type_is_stored_as_text(tmp_path: Path) -> None:
    exchanges = []
    for i, (model, _) in enumerate(MODELS):
        exchange = synthetic_exchange(i)
        exchange.model = model
        assert exchange.request_json is not None
        exchange.request_json["model"] = model
        exchanges.append(exchange)
    metrics = record_all(tmp_path, exchanges)
    assert_all_written(metrics, len(MODELS))
    for exchange, (model, expected) in zip(exchanges, MODELS, strict=True):
        [(text,)] = stored(
            tmp_path, "SELECT model FROM exchanges WHERE request_id = ?", [exchange.request_id]
        )
        if model is not None and expected is None:  # the deep one
            assert text == repr(model)[:MODEL_MAX_CHARS]
        else:
            assert text == expected


def hostile(i: int, change: Callable[[Exchange], None]) -> Exchange:
    exchange = synthetic_exchange(i)
    change(exchange)
    return exchange


def set_completion(target: str, **fields: Any) -> Callable[[Exchange], None]:
    def change(exchange: Exchange) -> None:
        for name, value in fields.items():
            setattr(exchange.results[target].completion, name, value)

    return change


def set_fields(**fields: Any) -> Callable[[Exchange], None]:
    def change(exchange: Exchange) -> None:
        for name, value in fields.items():
            setattr(exchange, name, value)

    return change


def set_score(**fields: Any) -> Callable[[Exchange], None]:
    def change(exchange: Exchange) -> None:
        for name, value in fields.items():
            setattr(exchange.scores[0], name, value)

    return change


LONE = "half a pair \ud83d here"  # json.loads and plug-ins can make these; UTF-8 cannot hold one
CASES: dict[str, Callable[[Exchange], None]] = {
    "huge token counts": set_completion("small", prompt_tokens=2**40, completion_tokens=2**70),
    "negative token count": set_completion("small", prompt_tokens=-5),
    "NaN and infinite latency": set_completion("small", latency_s=math.nan, ttft_s=math.inf),
    "lone surrogate in text": set_completion("small", text=LONE),
    "lone surrogate in error": set_completion("small", error=LONE, status=500),
    "lone surrogate in finish_reason": set_completion("small", finish_reason=LONE),
    "lone surrogate in tool call": set_completion(
        "small", tool_calls=[ToolCall(name=LONE, arguments=LONE, id=LONE)]
    ),
    "huge tool arguments": set_completion(
        "small", tool_calls=[ToolCall(name="t", arguments="{" * 500_000)]
    ),
    "lone surrogate in path": set_fields(path=f"/v1/chat/{LONE}"),
    "non-UTF-8 raw body": set_fields(request_json=None, request_body=b"\xff\xfe{\x80bad\xc3"),
    "body nested past orjson's depth": set_fields(
        request_json={"messages": nested(300)},
        request_body=orjson.dumps({"messages": "placeholder"}),
    ),
    "body integer past 64 bits": set_fields(request_json={"n": 2**80}, request_body=b'{"n":1}'),
    "not a bool stream": set_fields(stream="false"),
    "score detail with a lone surrogate": set_score(detail={"quote": LONE}),
    "score detail nested past orjson's depth": set_score(detail={"d": nested(300)}),
    "score detail integer past 64 bits": set_score(detail={"n": 2**70}),
    "score error with a lone surrogate": set_score(error=LONE, score=None),
    "NaN cost": lambda e: setattr(e.results["small"], "cost_usd", math.nan),
}


@pytest.mark.parametrize("bodies", ["redacted", "full", "none"])
def test_hostile_values_never_cost_the_exchange(tmp_path: Path, bodies: str) -> None:
    exchanges = [hostile(i, change) for i, change in enumerate(CASES.values())]
    exchanges.append(synthetic_exchange(len(exchanges)))  # a plain one in the same batch
    metrics = record_all(tmp_path, exchanges, bodies)
    assert_all_written(metrics, len(exchanges))
    ids = [e.request_id for e in exchanges]
    rows = dict(
        stored(
            tmp_path,
            "SELECT e.request_id, count(r.request_id) FROM exchanges e "
            "JOIN responses r USING (request_id) GROUP BY ALL",
            [],
        )
    )
    assert rows == dict.fromkeys(ids, 3)

    by_case = dict(zip(CASES, exchanges, strict=False))

    def small(case: str, columns: str) -> tuple[Any, ...]:
        [row] = stored(
            tmp_path,
            f"SELECT {columns} FROM responses WHERE request_id = ? AND target = 'small'",
            [by_case[case].request_id],
        )
        return row

    # Out of INTEGER's range: NULL rather than a lost row; in range (even negative): as sent.
    assert small("huge token counts", "prompt_tokens, completion_tokens") == (None, None)
    assert small("negative token count", "prompt_tokens") == (-5,)
    latency, ttft = small("NaN and infinite latency", "latency_ms, ttft_ms")
    assert math.isnan(latency) and ttft == math.inf
    # A lone surrogate is kept as its escape; the rest of the text is untouched.
    assert small("lone surrogate in error", "error") == ("half a pair \\ud83d here",)
    if bodies != "none":
        assert small("lone surrogate in text", "text") == ("half a pair \\ud83d here",)
        [calls] = small("lone surrogate in tool call", "tool_calls")
        assert orjson.loads(calls)[0]["arguments"] == "half a pair \\ud83d here"
        [huge] = small("huge tool arguments", "tool_calls")
        # Cut at storage.max_text_bytes (128 KiB), still a list of calls, marked and counted.
        arguments = orjson.loads(huge)[0]["arguments"]
        head, _, mark = arguments.partition("\n[TRUNCATED: 500000 bytes, the first ")
        assert head == "{" * len(head) and mark.endswith(" kept]")
        assert 100_000 < len(huge) <= 128 * 1024
        truncated = "shadowtap_record_text_truncated_total"
        assert metrics.registry.get_sample_value(truncated, {"field": "tool_calls"}) == 1
    [(stream,)] = stored(
        tmp_path,
        "SELECT stream FROM exchanges WHERE request_id = ?",
        [by_case["not a bool stream"].request_id],
    )
    assert stream is None  # unknown, not a guess
    if bodies != "none":
        [(body,)] = stored(
            tmp_path,
            "SELECT request_body FROM exchanges WHERE request_id = ?",
            [by_case["non-UTF-8 raw body"].request_id],
        )
        assert orjson.loads(body) == "\ufffd\ufffd{\ufffdbad\ufffd"
        [(deep,)] = stored(
            tmp_path,
            "SELECT request_body FROM exchanges WHERE request_id = ?",
            [by_case["body nested past orjson's depth"].request_id],
        )
        # orjson cannot write it back: the request's own bytes are kept, as a JSON string.
        assert orjson.loads(deep) == '{"messages":"placeholder"}'


def test_a_count_past_integer_alone_in_its_batch_is_stored_as_null(tmp_path: Path) -> None:
    # Within 64 bits DuckDB reads it as a BIGINT, so the writer's range check (not a
    # conversion failure) is what keeps the INSERT into INTEGER from refusing the batch.
    exchange = synthetic_exchange(0)
    exchange.results["small"].completion.prompt_tokens = 2**40
    exchange.results["primary"].completion.completion_tokens = -(2**31) - 1
    plain = synthetic_exchange(1)
    metrics = record_all(tmp_path, [exchange, plain])
    assert_all_written(metrics, 2)
    rows = stored(
        tmp_path,
        "SELECT target, prompt_tokens, completion_tokens FROM responses "
        "WHERE request_id = ? ORDER BY target",
        [exchange.request_id],
    )
    primary, secondary, small = rows
    assert primary[2] is None and primary[1] == 31  # only the bad value is dropped
    assert small[1] is None and small[2] == 48
    assert secondary[1:] == (31, 48)
