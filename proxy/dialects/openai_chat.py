"""`openai-chat` requests (`POST /v1/chat/completions`) to and from the neutral model.

Leading `system`/`developer` messages become `NeutralRequest.system`; `tool` messages become
tool turns; `max_tokens` is read as the legacy name of `max_completion_tokens`. Refusals,
audio, files, participant `name`s and the legacy `functions` API have no neutral form and make
the request unportable.

Example:
    request = parse({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]})
    body = render(request, model="llama-3.1-8b")
    # {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Hi"}]}
"""

from __future__ import annotations

from typing import Any

from shadowtap.dialects.neutral import (
    DEFAULT_OPTIONS,
    EMPTY_PARAMETERS,
    SCHEMA_NAME,
    ForcedTool,
    FunctionTool,
    Image,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NeutralRequest,
    Part,
    RenderOptions,
    ResponseFormat,
    Text,
    ToolChoice,
    ToolUse,
    Untranslatable,
)
from shadowtap.dialects.tables import (
    OPENAI_CHAT,
    ROLES_IN,
    STRICT_TOOLS_BY_DEFAULT,
    TOOL_CHOICE_IN,
    TOOL_CHOICE_OUT,
    ensure_expressible,
    sort_fields,
)
from shadowtap.dialects.wire import (
    api_word,
    arguments_text,
    as_dict,
    as_list,
    as_str,
    optional_bool,
    optional_int,
    optional_number,
    optional_str,
    text_or_none,
    unportable_field,
)

DIALECT = OPENAI_CHAT
# Message fields read per role; any other non-null field makes the request unportable.
_MESSAGE_FIELDS = frozenset({"role", "content", "tool_calls", "tool_call_id"})
_PART_REASONS = {
    "input_audio": "audio input",
    "file": "file input",
    "refusal": "a refusal in the history",
}


# -- parse --------------------------------------------------------------------------------------
def parse(body: dict[str, Any]) -> NeutralRequest:
    """A chat-completions request body as a `NeutralRequest` (see the module example)."""
    request = NeutralRequest(dialect=DIALECT, model=optional_str(body.get("model"), "model"))
    sort_fields(body, DIALECT, request)
    _read_messages(as_list(body.get("messages"), "messages"), request)
    for i, tool in enumerate(as_list(body.get("tools") or [], "tools")):
        _read_tool(as_dict(tool, f"tools[{i}]"), i, request)
    request.tool_choice = _read_tool_choice(body.get("tool_choice"), request)
    if optional_bool(body.get("parallel_tool_calls"), "parallel_tool_calls") is False:
        request.parallel_tool_calls = False
    request.response_format = _read_response_format(body.get("response_format"), request)
    cap = body.get("max_completion_tokens")
    request.max_output_tokens = optional_int(
        cap if cap is not None else body.get("max_tokens"), "max_completion_tokens"
    )
    request.temperature = optional_number(body.get("temperature"), "temperature")
    request.top_p = optional_number(body.get("top_p"), "top_p")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else as_list(stop or [], "stop")
    request.stop = [as_str(s, "stop") for s in stops]
    request.stream = optional_bool(body.get("stream"), "stream") or False
    request.reasoning_effort = optional_str(body.get("reasoning_effort"), "reasoning_effort")
    request.verbosity = optional_str(body.get("verbosity"), "verbosity")
    return request.settle()


def _read_messages(items: list[Any], request: NeutralRequest) -> None:
    leading = True
    for i, raw in enumerate(items):
        where = f"messages[{i}]"
        item = as_dict(raw, where)
        role = ROLES_IN[DIALECT].get(api_word(item.get("role")))
        if role is None:
            request.unportable.append(f"{where}: a role other than system/user/assistant/tool")
            continue
        for key, value in item.items():
            if key not in _MESSAGE_FIELDS and value is not None:
                request.unportable.append(unportable_field(f"{where}: field ", key))
        content = _read_parts(item.get("content"), where, request)
        if role == "system" and leading:
            if any(not isinstance(part, Text) for part in content):
                request.unportable.append(f"{where}: an image in a system message")
            request.system += [part.text for part in content if isinstance(part, Text)]
            continue
        leading = False
        message = Message(role, content)
        if role == "assistant":
            calls = as_list(item.get("tool_calls") or [], f"{where}.tool_calls")
            message.tool_calls = [_read_call(call, f"{where}.tool_calls[{j}]", request)
                                  for j, call in enumerate(calls)]  # fmt: skip
        elif role == "tool":
            message.tool_call_id = as_str(item.get("tool_call_id"), f"{where}.tool_call_id")
        request.messages.append(message)


def _read_parts(content: object, where: str, request: NeutralRequest) -> list[Part]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [Text(content)]
    parts: list[Part] = []
    for j, raw in enumerate(as_list(content, f"{where}.content")):
        part = as_dict(raw, f"{where}.content[{j}]")
        kind = part.get("type")
        if kind == "text":
            text = as_str(part.get("text"), f"{where}.content[{j}].text")
            if text:
                parts.append(Text(text))
        elif kind == "image_url":
            image = as_dict(part.get("image_url"), f"{where}.content[{j}].image_url")
            detail = optional_str(image.get("detail"), f"{where}.content[{j}].detail")
            url = as_str(image.get("url"), f"{where}.content[{j}].url")
            parts.append(Image(url, None if detail == "auto" else detail))
        else:
            reason = _PART_REASONS.get(api_word(kind), "a content part of an unknown type")
            request.unportable.append(f"{where}: {reason}")
    return parts


def _read_call(raw: object, where: str, request: NeutralRequest) -> ToolUse:
    call = as_dict(raw, where)
    if call.get("type", "function") != "function":
        request.unportable.append(f"{where}: a tool call that is not a function call")
    function = as_dict(call.get("function"), f"{where}.function")
    return ToolUse(
        id=as_str(call.get("id"), f"{where}.id"),
        name=as_str(function.get("name"), f"{where}.function.name"),
        arguments=arguments_text(function.get("arguments", "")),
    )


def _read_tool(tool: dict[str, Any], i: int, request: NeutralRequest) -> None:
    if tool.get("type") != "function":
        request.unportable.append(f"tools[{i}]: a tool that is not a function")
        return
    function = as_dict(tool.get("function"), f"tools[{i}].function")
    parameters = function.get("parameters")
    strict = optional_bool(function.get("strict"), f"tools[{i}].function.strict")
    request.tools.append(
        FunctionTool(
            name=as_str(function.get("name"), f"tools[{i}].function.name"),
            description=optional_str(function.get("description"), f"tools[{i}].description"),
            parameters=dict(EMPTY_PARAMETERS)
            if parameters is None
            else as_dict(parameters, f"tools[{i}].function.parameters"),
            strict=STRICT_TOOLS_BY_DEFAULT[DIALECT] if strict is None else strict,
        )
    )


def _read_tool_choice(value: object, request: NeutralRequest) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        words = TOOL_CHOICE_IN[DIALECT]
        if value in words:
            return words[value]
    elif isinstance(value, dict) and value.get("type") == "function":
        function = as_dict(value.get("function"), "tool_choice.function")
        return ForcedTool(as_str(function.get("name"), "tool_choice.function.name"))
    request.unportable.append("tool_choice has no faithful translation")
    return None


def _read_response_format(value: object, request: NeutralRequest) -> ResponseFormat | None:
    if value is None:
        return None
    fmt = as_dict(value, "response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonObjectFormat()
    if kind == "json_schema":
        spec = as_dict(fmt.get("json_schema"), "response_format.json_schema")
        return JsonSchemaFormat(
            schema=as_dict(spec.get("schema", {}), "response_format.json_schema.schema"),
            name=optional_str(spec.get("name"), "response_format.json_schema.name"),
            description=optional_str(spec.get("description"), "response_format.description"),
            strict=optional_bool(spec.get("strict"), "response_format.json_schema.strict"),
        )
    request.unportable.append("response_format has no faithful translation")
    return None


# -- render -------------------------------------------------------------------------------------
def render(
    request: NeutralRequest, model: str | None, options: RenderOptions = DEFAULT_OPTIONS
) -> dict[str, Any]:
    """The request as a chat-completions body for `model` (None: the request's own model).

    Raises `Untranslatable` when the request uses what chat cannot say (see the module
    example); a streamed request asks for usage in the last chunk so the answer is scored
    with its token counts.
    """
    ensure_expressible(request, DIALECT)
    body: dict[str, Any] = {}
    if (model or request.model) is not None:
        body["model"] = model or request.model
    body["messages"] = [{"role": "system", "content": text} for text in request.system] + [
        _render_message(message) for message in request.messages
    ]
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
    if isinstance(request.tool_choice, ForcedTool):
        body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice.name}}
    elif request.tool_choice is not None:
        body["tool_choice"] = TOOL_CHOICE_OUT[DIALECT][request.tool_choice]
    if request.parallel_tool_calls is False:
        body["parallel_tool_calls"] = False
    if request.response_format is not None:
        body["response_format"] = _render_response_format(request.response_format)
    if request.max_output_tokens is not None:
        body[options.chat_max_tokens_field] = request.max_output_tokens
    for name in ("temperature", "top_p", "reasoning_effort", "verbosity"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _render_parts(parts: list[Part]) -> str | list[dict[str, Any]]:
    if not parts:
        return ""
    texts = [part.text for part in parts if isinstance(part, Text)]
    if len(texts) == len(parts) and (single := text_or_none(texts)) is not None:
        return single
    rendered: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            rendered.append({"type": "text", "text": part.text})
        else:
            image: dict[str, Any] = {"url": part.url}
            if part.detail is not None:
                image["detail"] = part.detail
            rendered.append({"type": "image_url", "image_url": image})
    return rendered


def _render_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": _render_parts(message.content)}
    if message.role == "assistant" and message.tool_calls:
        if not message.content:
            out["content"] = None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    elif message.role == "tool":
        if message.tool_call_id is None:
            raise Untranslatable("a tool result without the id of its call")
        out["tool_call_id"] = message.tool_call_id
    return out


def _render_tool(tool: FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _render_response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if isinstance(fmt, JsonObjectFormat):
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": fmt.name or SCHEMA_NAME, "schema": fmt.schema}
    if fmt.description is not None:
        spec["description"] = fmt.description
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}
