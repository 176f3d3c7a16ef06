"""The simulated models' Anthropic face: `POST /v1/messages`, JSON or SSE.

A simulated model answers from a chat-completions view of the request (`chat_view`), so a
profile asked the same question through either API starts from the same base answer; only
the wire shape differs. That is what lets the demo show a cross-provider candidate: an OpenAI
chat primary, and a candidate shadowtap talks to in the Anthropic Messages API.

Example:
    view = chat_view({"model": "m", "max_tokens": 64, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "Hi"}]})
    # {"messages": [{"role": "system", ...}, {"role": "user", "content": "Hi"}], ...}
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from shadowtap.demo.answers import Answer

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _turns(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One Anthropic message as the chat messages it stands for: a user turn's tool results
    are chat `tool` messages, an assistant's `tool_use` blocks its `tool_calls`."""
    role, content = message.get("role"), message.get("content")
    blocks = content if isinstance(content, list) else []
    if role == "user":
        results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return [
                {
                    "role": "tool",
                    "tool_call_id": b.get("tool_use_id"),
                    "content": _text(b.get("content")),
                }
                for b in results
            ]
        return [{"role": "user", "content": _text(content)}]
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": orjson.dumps(b.get("input")).decode()},
        }
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]
    turn: dict[str, Any] = {"role": "assistant", "content": _text(content) or None}
    if calls:
        turn["tool_calls"] = calls
    return [turn]


def chat_view(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions request an Anthropic Messages request stands for (the fields the
    simulated models read: messages, tools, tool choice, JSON schema, the token cap)."""
    messages: list[dict[str, Any]] = []
    system = _text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            messages += _turns(message)
    view: dict[str, Any] = {"messages": messages, "max_tokens": body.get("max_tokens")}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    if tools:
        view["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema"),
                },
            }
            for t in tools
        ]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "any":
        view["tool_choice"] = "required"
    elif kind == "tool":
        view["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind == "none":
        view["tool_choice"] = "none"
    fmt = ((body.get("output_config") or {}).get("format")) or {}
    if fmt.get("type") == "json_schema":
        schema = {"name": "output", "strict": True, "schema": fmt.get("schema")}
        view["response_format"] = {"type": "json_schema", "json_schema": schema}
    return view


def error(status: int, message: str, kind: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, dumps=lambda v: orjson.dumps(v).decode())


def _content(reply: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text is not None:
        blocks.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        try:
            arguments = orjson.loads(call["arguments"])
        except orjson.JSONDecodeError:  # a broken call (tool-breaker): Anthropic sends objects
            arguments = {"_raw": call["arguments"]}
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": call["name"], "input": arguments}
        )
    return blocks


def message_json(reply: Answer, message_id: str, model: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(reply),
        "stop_reason": STOP_REASONS.get(reply.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    }


def _event(kind: str, **fields: Any) -> bytes:
    return (
        b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"
    )


async def stream(
    request: web.Request,
    reply: Answer,
    message_id: str,
    model: str,
    pieces: Callable[[str], list[str]],
    pause: Callable[[int], float],
    reset_after: int | None,
) -> web.StreamResponse:
    """The answer as Messages API events, `pause(tokens)` seconds before each delta; with
    `reset_after`, the connection is dropped after that many deltas (a mid-stream fault)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    start = {**message_json(reply, message_id, model), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": reply.prompt_tokens, "output_tokens": 1}
    deltas: list[tuple[int, dict[str, Any], int]] = []  # (block, delta, tokens)
    firsts: list[dict[str, Any]] = []
    for block in _content(reply):
        index = len(firsts)
        if block["type"] == "text":
            firsts.append({"type": "text", "text": ""})
            deltas += [
                (index, {"type": "text_delta", "text": p}, len(p.split()))
                for p in pieces(block["text"])
            ]
        else:
            firsts.append({**block, "input": {}})
            args = orjson.dumps(block["input"]).decode()
            deltas += [
                (index, {"type": "input_json_delta", "partial_json": args[i : i + 8]}, 1)
                for i in range(0, len(args), 8)
            ]
    try:
        await response.write(_event("message_start", message=start))
        opened: set[int] = set()
        for sent, (index, delta, tokens) in enumerate(deltas):
            if reset_after is not None and sent >= reset_after:
                if request.transport is not None:
                    request.transport.abort()
                return response
            if index not in opened:
                if opened:
                    await response.write(_event("content_block_stop", index=max(opened)))
                opened.add(index)
                await response.write(
                    _event("content_block_start", index=index, content_block=firsts[index])
                )
            await asyncio.sleep(pause(tokens))
            await response.write(_event("content_block_delta", index=index, delta=delta))
        if opened:
            await response.write(_event("content_block_stop", index=max(opened)))
        stop = {
            "stop_reason": STOP_REASONS.get(reply.finish_reason, "end_turn"),
            "stop_sequence": None,
        }
        await response.write(
            _event("message_delta", delta=stop, usage={"output_tokens": reply.completion_tokens})
        )
        await response.write(_event("message_stop"))
    except ConnectionResetError:
        return response
    await response.write_eof()
    return response
