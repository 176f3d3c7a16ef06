"""Recording traffic for the replay and export tests, into a DuckDB file in tmp_path: real
traffic (the official `openai` client through an in-process shadowtap), or many made-up
exchanges written straight through the Recorder (`record_synthetic`), each asking its own
question (`tests.synthetic`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap.config import Config, StorageConfig, parse_config
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.fakes import FakeModel, chat_json
from tests.synthetic import synthetic_exchange

SCORERS = {"similarity": {"type": "text_similarity", "threshold": 0.8}}


def prompt(i: int) -> str:
    return f"Question {i}: how many moons does planet {i % 7} have, and why?"


async def record_traffic(
    start_fake: StartFake,
    start_shadowtap: StartShadowtap,
    db: Path,
    requests: int,
    *,
    bodies: str = "full",
    extra_messages: list[dict[str, Any]] | None = None,
) -> FakeModel:
    """`requests` chat completions (every third one streamed) through shadowtap with a live
    candidate `live` and the secondary; returns the primary fake. shadowtap is stopped after,
    so the file is complete and free."""
    primary, live = await start_fake(), await start_fake()
    config = make_config(
        primary,
        {"live": live},
        secondary={"rate": 1.0},
        sampling={"max_inflight": 1000},
        scorers=SCORERS,
        storage={"enabled": True, "path": str(db), "flush_interval_ms": 50, "bodies": bodies},
    )
    server = await start_shadowtap(config)
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.proxy_port}/v1", api_key="sk-test-client-key-0001"
    )

    async def send(i: int) -> None:
        messages = [*(extra_messages or []), {"role": "user", "content": prompt(i)}]
        if i % 3 == 0:
            stream = await client.chat.completions.create(
                model="gpt-test",
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass
        else:
            await client.chat.completions.create(model="gpt-test", messages=messages)  # type: ignore[arg-type]

    for start in range(0, requests, 8):
        await asyncio.gather(*(send(i) for i in range(start, min(start + 8, requests))))
    await client.close()
    await server.stop()
    return primary


def replay_config(primary: FakeModel, candidates: dict[str, Any], **sections: Any) -> Config:
    """The config a replay runs with: the recording's scorers, the given candidates."""
    tables = {"scorers": SCORERS, **sections}
    return parse_config(make_config(primary, candidates, **tables), {})


def write_config(path: Path, primary: FakeModel, candidates: dict[str, str], db: Path) -> Path:
    """A shadowtap.toml for a `shadowtap replay` subprocess."""
    lines = [
        "[primary]",
        f'url = "{primary.url}"',
        "[storage]",
        f'path = "{db}"',
        'bodies = "full"',
        "[scorers.similarity]",
        'type = "text_similarity"',
        "threshold = 0.8",
    ]
    for name, url in candidates.items():
        lines += [f"[candidates.{name}]", f'url = "{url}"', "timeout_s = 60"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


NOWHERE = "http://127.0.0.1:9"  # the primary of a replay config: never called


def record_synthetic(db: Path, count: int) -> None:
    """`count` exchanges (bodies stored in full), the i-th asking "Question i: ..."."""
    storage = StorageConfig(path=str(db), bodies="full", queue_max=count + 1)
    recorder = Recorder(storage, Metrics(CollectorRegistry()))
    recorder.start()
    for i in range(count):
        recorder.record(synthetic_exchange(i))
    recorder.close(timeout_s=60)


def synthetic_replay_config(
    candidate_url: str,
    db: Path,
    scorers: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> Config:
    """A replay config for `record_synthetic` files: the candidate `new` at `candidate_url`."""
    tables = {
        "server": server or {},
        "primary": {"url": NOWHERE},
        "candidates": {"new": {"url": candidate_url, "timeout_s": 60}},
        "scorers": SCORERS if scorers is None else scorers,
        "storage": {"path": str(db), "bodies": "full"},
    }
    return parse_config(tables, {})


def write_synthetic_config(path: Path, candidate_url: str, db: Path) -> Path:
    """The same as a shadowtap.toml, for a `shadowtap replay` subprocess."""
    lines = [
        "[primary]",
        f'url = "{NOWHERE}"',
        "[storage]",
        f'path = "{db}"',
        'bodies = "full"',
        "[scorers.similarity]",
        'type = "text_similarity"',
        "threshold = 0.8",
        "[candidates.new]",
        f'url = "{candidate_url}"',
        "timeout_s = 60",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Candidate:
    """Answers every request with `text`, counting each by its question."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.seen: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = orjson.loads(body)
        self.seen[payload["messages"][-1]["content"]] += 1
        return web.json_response(chat_json(payload, self.text, body))


async def serve(aiohttp_server: Any, candidate: Candidate) -> str:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", candidate.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")
