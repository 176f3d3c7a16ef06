"""A fake provider that speaks every dialect: a real aiohttp app on loopback.

`FakeProvider` serves `/v1/chat/completions`, `/v1/messages` (Anthropic), `/v1/responses` and
`/v1/embeddings`, JSON and SSE, in the shapes the official `openai` and `anthropic` SDKs
parse (the shapes of tests/fixtures/dialects, checked against the SDKs' own types in
tests/test_dialect_fakes.py). Whatever the dialect, the *underlying* answer depends only on
the question: the last user text, and the first tool offered. So a chat primary and an
Anthropic candidate asked the same question give the same text and the same tool call, and
any difference a scorer sees comes from the translation, not from the fake.

Every request is recorded (`received`: method, path, headers, body) so a test can assert
the translated request's shape and the credentials it carried.

Example:
    provider = await serve(aiohttp_server, FakeProvider())
    ...  # point a client or a candidate at provider.url
    [sent] = provider.requests("/v1/messages")
    assert sent.json["max_tokens"] == 1024
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from tests.fakes import Received

TOOL_ARGUMENTS = '{"city":"Paris"}'  # what every fake "model" passes to the first tool offered
INPUT_TOKENS = 11
DIMENSIONS = 8


@dataclass(frozen=True)
class Said:
    """The underlying answer, before any dialect's wire shape."""

    text: str | None
    tool: str | None  # the name of the one tool called, if any

    @property
    def output_tokens(self) -> int:
        return len((self.text or "").split()) + (3 if self.tool else 0)


def _text_of(content: object) -> str:
    """A message's text, whatever the dialect: a string, or the text of its text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return "".join(part for part in parts if isinstance(part, str))
    return ""


def last_user_text(path: str, body: dict[str, Any]) -> str:
    if path == "/v1/responses":
        items = body.get("input")
        if isinstance(items, str):
            return items
        users = [i for i in items or () if isinstance(i, dict) and i.get("role") == "user"]
        return _text_of(users[-1].get("content")) if users else ""
    users = [m for m in body.get("messages") or () if m.get("role") == "user"]
    # An Anthropic tool result is a user turn too: only text counts, as in every dialect.
    return _text_of(users[-1].get("content")) if users else ""


def first_tool(path: str, body: dict[str, Any]) -> str | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    tool = tools[0]
    name = tool.get("function", {}).get("name") if path == "/v1/chat/completions" else None
    return name or tool.get("name")


def underlying(path: str, body: dict[str, Any], behaviour: str) -> Said:
    tool = first_tool(path, body)
    if tool is not None:
        return Said(None, tool)
    last = last_user_text(path, body)
    if behaviour == "paraphrase":
        return Said(
            f"In short, regarding '{last}': the reply differs and is phrased otherwise.", None
        )
    return Said(f"The answer to '{last}' is forty-two, as computed carefully.", None)


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + words[-1:]


def _id(prefix: str, body: bytes) -> str:
    return prefix + hashlib.sha256(body).hexdigest()[:24]


def sse(kind: str | None, payload: dict[str, Any]) -> bytes:
    head = b"event: " + kind.encode() + b"\n" if kind else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


# -- openai-chat ---------------------------------------------------------------------------------
def chat_json(said: Said, model: str, body: bytes) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": said.text, "refusal": None}
    if said.tool:
        message["tool_calls"] = [
            {
                "id": "call_" + _id("", body)[:12],
                "type": "function",
                "function": {"name": said.tool, "arguments": TOOL_ARGUMENTS},
            }
        ]
    return {
        "id": _id("chatcmpl-", body),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if said.tool else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": INPUT_TOKENS,
            "completion_tokens": said.output_tokens,
            "total_tokens": INPUT_TOKENS + said.output_tokens,
        },
    }


def chat_events(said: Said, model: str, body: bytes) -> list[bytes]:
    base = {
        "id": _id("chatcmpl-", body),
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse(None, {**base, "choices": [choice]})

    events = [chunk({"role": "assistant", "content": "" if said.text is not None else None})]
    if said.tool:
        call = {"index": 0, "id": "call_" + _id("", body)[:12], "type": "function"}
        events.append(
            chunk({"tool_calls": [{**call, "function": {"name": said.tool, "arguments": ""}}]})
        )
        for piece in (TOOL_ARGUMENTS[:7], TOOL_ARGUMENTS[7:]):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    for word in _words(said.text or ""):
        events.append(chunk({"content": word}))
    events.append(chunk({}, "tool_calls" if said.tool else "stop"))
    return [*events, b"data: [DONE]\n\n"]


# -- anthropic-messages --------------------------------------------------------------------------
def _anthropic_stop(said: Said) -> str:
    return "tool_use" if said.tool else "end_turn"


def _tool_use(said: Said, body: bytes, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": _id("toolu_", body), "name": said.tool, "input": arguments}


def anthropic_json(said: Said, model: str, body: bytes) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if said.text is not None:
        content.append({"type": "text", "text": said.text})
    if said.tool:
        content.append(_tool_use(said, body, orjson.loads(TOOL_ARGUMENTS)))
    return {
        "id": _id("msg_", body),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _anthropic_stop(said),
        "stop_sequence": None,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": said.output_tokens},
    }


def anthropic_events(said: Said, model: str, body: bytes) -> list[bytes]:
    start = {**anthropic_json(said, model, body), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": INPUT_TOKENS, "output_tokens": 1}
    events = [sse("message_start", {"type": "message_start", "message": start})]
    events.append(sse("ping", {"type": "ping"}))

    def block(index: int, first: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        events.append(
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
        )
        for delta in deltas:
            events.append(
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))

    if said.text is not None:
        texts = [{"type": "text_delta", "text": word} for word in _words(said.text)]
        block(0, {"type": "text", "text": ""}, texts)
    if said.tool:
        pieces = [TOOL_ARGUMENTS[:7], TOOL_ARGUMENTS[7:]]
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        block(1 if said.text is not None else 0, _tool_use(said, body, {}), deltas)
    stop = {"stop_reason": _anthropic_stop(said), "stop_sequence": None}
    usage = {"output_tokens": said.output_tokens}
    events.append(sse("message_delta", {"type": "message_delta", "delta": stop, "usage": usage}))
    events.append(sse("message_stop", {"type": "message_stop"}))
    return events


# -- openai-responses ----------------------------------------------------------------------------
def _response_items(said: Said, body: bytes) -> list[dict[str, Any]]:
    if said.tool:
        return [
            {
                "id": _id("fc_", body),
                "type": "function_call",
                "status": "completed",
                "arguments": TOOL_ARGUMENTS,
                "call_id": "call_" + _id("", body)[:12],
                "name": said.tool,
            }
        ]
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": said.text or ""}
    return [
        {
            "id": _id("msg_", body),
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
    ]


def responses_json(
    said: Said, model: str, body: bytes, *, status: str = "completed"
) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": _id("resp_", body),
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": _response_items(said, body) if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": said.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": INPUT_TOKENS + said.output_tokens,
        }
        if done
        else None,
        "user": None,
        "metadata": {},
    }


def responses_events(said: Said, model: str, body: bytes) -> list[bytes]:
    payloads: list[dict[str, Any]] = []

    def add(kind: str, **fields: Any) -> None:
        payloads.append({"type": kind, "sequence_number": len(payloads), **fields})

    running = responses_json(said, model, body, status="in_progress")
    add("response.created", response=running)
    add("response.in_progress", response=running)
    [item] = _response_items(said, body)
    at = {"item_id": item["id"], "output_index": 0}
    if said.tool:
        add(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "arguments": ""},
        )
        for piece in (TOOL_ARGUMENTS[:7], TOOL_ARGUMENTS[7:]):
            add("response.function_call_arguments.delta", **at, delta=piece)
        add("response.function_call_arguments.done", **at, arguments=TOOL_ARGUMENTS)
    else:
        text = said.text or ""
        empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        add(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "content": []},
        )
        add("response.content_part.added", **at, content_index=0, part=empty)
        for word in _words(text):
            add("response.output_text.delta", **at, content_index=0, delta=word, logprobs=[])
        add("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
        add("response.content_part.done", **at, content_index=0, part={**empty, "text": text})
    add("response.output_item.done", output_index=0, item=item)
    add("response.completed", response=responses_json(said, model, body))
    return [sse(payload["type"], payload) for payload in payloads]


# -- openai-embeddings ---------------------------------------------------------------------------
def vector(text: str) -> list[float]:
    """A deterministic unit-scale vector per input: same input, same vector, any fake."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(byte - 127.5) / 127.5 for byte in digest[:DIMENSIONS]]


def embeddings_json(request: dict[str, Any], model: str) -> dict[str, Any]:
    inputs = request.get("input")
    texts = [inputs] if isinstance(inputs, str) else [str(i) for i in inputs or ()]
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        values = vector(text)
        embedding: Any = values
        if as_base64:  # little-endian float32, as the API sends it
            embedding = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(len(text.split()) for text in texts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# -- the server ----------------------------------------------------------------------------------
JSON_OF = {
    "/v1/chat/completions": chat_json,
    "/v1/messages": anthropic_json,
    "/v1/responses": responses_json,
}
EVENTS_OF = {
    "/v1/chat/completions": chat_events,
    "/v1/messages": anthropic_events,
    "/v1/responses": responses_events,
}


def error_body(path: str, message: str) -> dict[str, Any]:
    if path == "/v1/messages":
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


@dataclass
class FakeProvider:
    """Every dialect's endpoint; `behaviour` "ok" or "paraphrase" (other words, same tools);
    `model` names the answering model when the request names none."""

    behaviour: str = "ok"
    model: str = "fake-model"
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def requests(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path_qs.split("?")[0] == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # Case-insensitive, as HTTP header names are (the SDKs send `X-Api-Key`, `x-api-key`...).
        headers: Any = CIMultiDict(request.headers)
        self.received.append(Received(request.method, request.path_qs, headers, body))
        path = request.path
        if path not in (*JSON_OF, "/v1/embeddings"):
            return web.json_response(error_body(path, "no such route"), status=404)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.json_response(error_body(path, "the body is not JSON"), status=400)
        model = payload.get("model") or self.model
        if path == "/v1/embeddings":
            return web.json_response(embeddings_json(payload, model))
        if path == "/v1/messages" and not isinstance(payload.get("max_tokens"), int):
            return web.json_response(error_body(path, "max_tokens: Field required"), status=400)
        said = underlying(path, payload, self.behaviour)
        if not payload.get("stream"):
            return web.json_response(JSON_OF[path](said, model, body))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for event in EVENTS_OF[path](said, model, body):
            await response.write(event)
        await response.write_eof()
        return response


async def serve(aiohttp_server: Any, provider: FakeProvider) -> FakeProvider:
    """Serve `provider` with pytest-aiohttp's `aiohttp_server` fixture (closed after the test)."""
    server = await aiohttp_server(provider.app())
    provider.url = str(server.make_url("")).rstrip("/")
    return provider
