"""`shadowtap export` round trips: JSONL that the openai package's types accept, a Batch API
input file, Parquet, --only disagreements exactly, and redaction kept and accounted for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import TypeAdapter
from shadowtap.cli import main
from shadowtap.export.formats import write_lines
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.conftest import StartFake, StartShadowtap
from tests.fakes import answer_text, chat_json
from tests.replaying import record_traffic, replay_config

N = 12
SYSTEM = {"role": "system", "content": "You answer astronomy questions briefly."}
MESSAGES = TypeAdapter(list[ChatCompletionMessageParam])


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def export(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(["export", *args]) == 0
    return capsys.readouterr().err


@pytest.fixture
async def recorded(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any, tmp_path: Path
) -> Path:
    """N recorded requests and a replayed candidate `half` that agrees on even prompts and
    rewords odd ones."""
    db = tmp_path / "shadowtap.duckdb"
    primary = await record_traffic(start_fake, start_shadowtap, db, N, extra_messages=[SYSTEM])

    async def half(request: web.Request) -> web.Response:
        body = await request.read()
        payload = orjson.loads(body)
        number = int(payload["messages"][-1]["content"].split(":")[0].split()[-1])
        text = answer_text(payload, "ok" if number % 2 == 0 else "paraphrase")
        return web.json_response(chat_json(payload, text, body))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", half)
    server = await aiohttp_server(app)
    config = replay_config(primary, {"half": str(server.make_url("")).rstrip("/")})
    summary = await ReplayRunner(config, ReplayOptions("half", progress=False), db).run()
    assert summary.complete
    return db


async def test_jsonl_is_openai_chat_messages_with_the_primary_answer(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "chat.jsonl"
    said = export(capsys, "--db", str(recorded), "--out", str(out), "--candidate", "half")
    rows = lines(out)
    assert said.strip() == f"exported {N} rows (jsonl) to {out}; nothing left out"
    assert len(rows) == N
    for row in rows:
        messages = MESSAGES.validate_python(row["messages"])
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        question = row["messages"][1]["content"]
        assert row["messages"][2]["content"].rstrip() == answer_text(
            {"messages": [{"content": question}]}
        )
        assert row["candidate"]["name"] == "half" and row["candidate"]["source"] == "replay"
        TypeAdapter(ChatCompletionMessageParam).validate_python(row["candidate"]["message"])
        assert set(row["candidate"]["scores"]) == {"similarity"}
        assert set(row["metadata"]) == {
            "request_id",
            "started_at",
            "route",
            "model",
            "finish_reason",
        }


async def test_tool_calls_and_tools_export_as_the_api_shapes(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from shadowtap.completion import Completion, ToolCall
    from shadowtap.export.formats import chat_line
    from shadowtap.export.rows import ExportRow

    tool = {"type": "function", "function": {"name": "moons", "parameters": {"type": "object"}}}
    request = {"messages": [{"role": "user", "content": "moons of Mars?"}], "tools": [tool]}
    answer = Completion(
        status=200, tool_calls=[ToolCall("moons", '{"planet": "Mars"}')], finish_reason="tool_calls"
    )
    row = ExportRow(
        "r1",
        datetime.now(UTC),
        "/v1/chat/completions",
        "/v1/chat/completions",
        "m",
        request,
        answer,
    )
    from collections import Counter

    line = orjson.loads(chat_line(row, Counter()) or b"")
    MESSAGES.validate_python(line["messages"])
    TypeAdapter(list[ChatCompletionToolParam]).validate_python(line["tools"])
    assert line["messages"][-1]["tool_calls"][0]["id"] == "call_0"


async def test_batch_file_matches_the_batch_api_input_schema(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "batch.jsonl"
    said = export(
        capsys,
        "--db",
        str(recorded),
        "--out",
        str(out),
        "--format",
        "openai-batch",
        "--model",
        "gpt-4o-mini",
    )
    assert said.startswith(f"exported {N} rows (openai-batch) to {out}")
    rows = lines(out)
    assert len({r["custom_id"] for r in rows}) == N
    for row in rows:
        assert set(row) == {"custom_id", "method", "url", "body"}
        assert row["method"] == "POST" and row["url"] == "/v1/chat/completions"
        assert row["body"]["model"] == "gpt-4o-mini"
        assert "stream" not in row["body"] and "stream_options" not in row["body"]
        MESSAGES.validate_python(row["body"]["messages"])


def test_batch_files_split_at_the_request_limit(tmp_path: Path) -> None:
    files = write_lines(
        tmp_path / "b.jsonl", (b"{}\n" for _ in range(5)), split=True, max_requests=2
    )
    assert [f.name for f in files] == ["b.jsonl", "b.2.jsonl", "b.3.jsonl"]
    assert [len(f.read_bytes().splitlines()) for f in files] == [2, 2, 1]


async def test_only_disagreements_returns_exactly_the_pairs_under_the_threshold(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    con = duckdb.connect(str(recorded), read_only=True)
    under = {
        r[0]
        for r in con.execute(
            "SELECT request_id FROM pairs WHERE target = 'half' AND scores['similarity'] < 0.8"
        ).fetchall()
    }
    con.close()
    assert len(under) == N // 2
    out = tmp_path / "hard.jsonl"
    said = export(
        capsys,
        "--db",
        str(recorded),
        "--out",
        str(out),
        "--candidate",
        "half",
        "--only",
        "disagreements",
        "--scorer",
        "similarity",  # --below: the stored 0.8
    )
    assert {r["metadata"]["request_id"] for r in lines(out)} == under
    assert f"left out {N // 2}: {N // 2} not a disagreement" in said
    assert all(r["candidate"]["scores"]["similarity"] < 0.8 for r in lines(out))
    # A threshold under every score: nothing, and it says why.
    said = export(
        capsys,
        "--db",
        str(recorded),
        "--out",
        str(out),
        "--candidate",
        "half",
        "--only",
        "disagreements",
        "--scorer",
        "similarity",
        "--below",
        "0",
    )
    assert lines(out) == [] and f"left out {N}: {N} not a disagreement" in said


async def test_parquet_holds_every_pair(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pairs.parquet"
    export(
        capsys,
        "--db",
        str(recorded),
        "--out",
        str(out),
        "--format",
        "parquet",
        "--candidate",
        "half",
    )
    rows = duckdb.sql(
        f"SELECT candidate, candidate_source, scores['similarity'] IS NOT NULL AS scored,"
        f" request_body::JSON->>'$.messages[1].content' LIKE 'Question %' AS asked"
        f" FROM '{out}'"
    ).fetchall()
    assert rows == [("half", "replay", True, True)] * N


async def test_redacted_rows_are_left_out_and_counted_unless_allowed(
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    mail = {"role": "system", "content": "Write to ada@example.org with the answer."}
    await record_traffic(
        start_fake, start_shadowtap, db, 4, bodies="redacted", extra_messages=[mail]
    )
    out = tmp_path / "out.jsonl"
    said = export(capsys, "--db", str(db), "--out", str(out))
    assert lines(out) == []
    assert "left out 4: 4 redacted text (--allow-redacted keeps them" in said
    export(capsys, "--db", str(db), "--out", str(out), "--allow-redacted")
    assert [r["messages"][0]["content"] for r in lines(out)] == [
        "Write to [REDACTED:email] with the answer."
    ] * 4


async def test_export_redacts_to_the_configured_level_whatever_was_recorded(
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    key = "sk-proj-EXPORTCANARY0123456789abcdef"
    secret = {"role": "system", "content": f"Mail ada@example.org; my key is {key}."}
    await record_traffic(start_fake, start_shadowtap, db, 2, bodies="full", extra_messages=[secret])
    config = tmp_path / "shadowtap.toml"
    config.write_text('[primary]\nurl = "http://127.0.0.1:9"\n[storage]\nbodies = "full"\n')
    out = tmp_path / "out.jsonl"
    export(capsys, "--db", str(db), "--out", str(out), "--config", str(config), "--allow-redacted")
    text = out.read_text()
    assert key not in text and "ada@example.org" in text  # credentials never, mail in "full"
    said = export(capsys, "--db", str(db), "--out", str(out), "--allow-redacted")
    assert "ada@example.org" not in out.read_text()  # the default level redacts personal data
    assert said.startswith("exported 2 rows")


def test_bad_combinations_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in (
        (["--only", "disagreements"], "needs --candidate NAME and --scorer S"),
        (["--scorer", "x"], "go with --only disagreements"),
        (["--model", "m"], "goes with --format openai-batch"),
        (["--since", "yesterday"], "--since"),
    ):
        assert main(["export", "--db", str(tmp_path / "x.duckdb"), "--out", "o", *args]) == 2
        assert message in capsys.readouterr().err
    assert main(["export", "--db", str(tmp_path / "missing.duckdb"), "--out", "o"]) == 2
    assert "does not exist" in capsys.readouterr().err
