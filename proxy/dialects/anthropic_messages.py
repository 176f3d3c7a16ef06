"""`anthropic-messages` requests (`POST /v1/messages`) to and from the neutral model.

`system` (a string or text blocks) is the neutral system list; a user turn's `tool_result`
blocks become tool turns (and are gathered back into one user turn, results first, when
rendering); `tool_use` input objects become JSON argument text. Earlier turns' `thinking`
blocks are dropped (Anthropic itself does not show them to the model again); documents,
provider-run tools and their results, `top_k`, extended thinking and `effort` are unportable.

Example:
    request = parse({"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.",
                     "messages": [{"role": "user", "content": "Hi"}]})
    render(request, "claude-haiku-4-5")
    # {"model": "claude-haiku-4-5", "max_tokens": 256, "system": "Be brief.",
    #  "messages": [{"role": "user", "content": "Hi"}]}
"""

from __future__ import annotations

from typing import Any

from shadowtap.dialects.neutral import (
    DEFAULT_OPTIONS,
    ForcedTool,
    FunctionTool,
    Image,
    JsonSchemaFormat,
    Message,
    NeutralRequest,
    Part,
    RenderOptions,
    Role,
    Text,
    ToolChoice,
    ToolUse,
    Untranslatable,
)
from shadowtap.dialects.tables import (
    ANTHROPIC_IMAGE_TYPES,
    ANTHROPIC_MESSAGES,
    ROLES_IN,
    STRICT_TOOLS_BY_DEFAULT,
    TOOL_CHOICE_IN,
    TOOL_CHOICE_OUT,
    ensure_expressible,
    sort_fields,
)
from shadowtap.dialects.wire import (
    api_word,
    arguments_object,
    arguments_text,
    as_dict,
    as_list,
    as_str,
    optional_bool,
    optional_int,
    optional_number,
    optional_str,
    split_data_url,
    text_or_none,
    unportable_field,
)

DIALECT = ANTHROPIC_MESSAGES
_HIDDEN_REASONING = frozenset({"thinking", "redacted_thinking"})
_TOOL_FIELDS = frozenset({"name", "description", "input_schema", "strict", "type"})
_TOOL_FIELDS_DROPPED = frozenset({"cache_control", "eager_input_streaming"})


# -- parse --------------------------------------------------------------------------------------
def parse(body: dict[str, Any]) -> NeutralRequest:
    """A Messages API request body as a `NeutralRequest` (see the module example)."""
    request = NeutralRequest(dialect=DIALECT, model=optional_str(body.get("model"), "model"))
    sort_fields(body, DIALECT, request)
    request.system = _read_system(body.get("system"), request)
    _read_messages(as_list(body.get("messages"), "messages"), request)
    for i, tool in enumerate(as_list(body.get("tools") or [], "tools")):
        _read_tool(as_dict(tool, f"tools[{i}]"), f"tools[{i}]", request)
    _read_tool_choice(body.get("tool_choice"), request)
    _read_output_config(body.get("output_config"), request)
    request.max_output_tokens = optional_int(body.get("max_tokens"), "max_tokens")
    request.temperature = optional_number(body.get("temperature"), "temperature")
    request.top_p = optional_number(body.get("top_p"), "top_p")
    stops = as_list(body.get("stop_sequences") or [], "stop_sequences")
    request.stop = [as_str(stop, "stop_sequences") for stop in stops]
    request.stream = optional_bool(body.get("stream"), "stream") or False
    return request.settle()


def _read_system(value: object, request: NeutralRequest) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    texts: list[str] = []
    for i, raw in enumerate(as_list(value, "system")):
        block = as_dict(raw, f"system[{i}]")
        if block.get("type") != "text":
            request.unportable.append(f"system[{i}]: a block that is not text")
            continue
        text = as_str(block.get("text"), f"system[{i}].text")
        if text:
            texts.append(text)
    return texts


def _read_messages(items: list[Any], request: NeutralRequest) -> None:
    for i, raw in enumerate(items):
        where = f"messages[{i}]"
        item = as_dict(raw, where)
        role = ROLES_IN[DIALECT].get(api_word(item.get("role")))
        if role is None:
            raise Untranslatable(f"{where}.role is not user, assistant or system")
        turns = _read_turns(role, item.get("content"), where, request)
        if role == "system" and not request.messages:
            request.system += [text for turn in turns for text in [turn.text()] if text]
        else:
            request.messages += turns


def _read_turns(role: Role, content: object, where: str, request: NeutralRequest) -> list[Message]:
    """One wire message as neutral turns: a user message's tool results are turns of their own."""
    if content is None or content == "":
        return [Message(role)]
    if isinstance(content, str):
        return [Message(role, [Text(content)])]
    turns: list[Message] = []
    current = Message(role)
    for j, raw in enumerate(as_list(content, f"{where}.content")):
        block_where = f"{where}.content[{j}]"
        block = as_dict(raw, block_where)
        kind = block.get("type")
        if kind == "tool_use" and role == "assistant":
            current.tool_calls.append(
                ToolUse(
                    id=as_str(block.get("id"), f"{block_where}.id"),
                    name=as_str(block.get("name"), f"{block_where}.name"),
                    arguments=arguments_text(as_dict(block.get("input"), f"{block_where}.input")),
                )
            )
        elif kind == "tool_result" and role == "user":
            if current.content:
                turns.append(current)
                current = Message(role)
            turns.append(_read_tool_result(block, block_where, request))
        elif kind in _HIDDEN_REASONING and role == "assistant":
            request.dropped.append(kind)
        else:
            part = _read_part(block, block_where, request)
            if part is not None:
                current.content.append(part)
    if current.content or current.tool_calls or not turns:
        turns.append(current)
    return turns


def _read_part(block: dict[str, Any], where: str, request: NeutralRequest) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        text = as_str(block.get("text"), f"{where}.text")
        return Text(text) if text else None
    if kind == "image":
        source = as_dict(block.get("source"), f"{where}.source")
        if source.get("type") == "url":
            return Image(as_str(source.get("url"), f"{where}.source.url"))
        if source.get("type") == "base64":
            media_type = as_str(source.get("media_type"), f"{where}.source.media_type")
            data = as_str(source.get("data"), f"{where}.source.data")
            return Image(f"data:{media_type};base64,{data}")
        request.unportable.append(f"{where}: an image stored with the provider")
        return None
    request.unportable.append(f"{where}: a block of type {api_word(kind)}")
    return None


def _read_tool_result(block: dict[str, Any], where: str, request: NeutralRequest) -> Message:
    turn = Message("tool", tool_call_id=as_str(block.get("tool_use_id"), f"{where}.tool_use_id"))
    turn.is_error = optional_bool(block.get("is_error"), f"{where}.is_error") or False
    content = block.get("content")
    if isinstance(content, str):
        turn.content = [Text(content)] if content else []
    elif content is not None:
        for k, raw in enumerate(as_list(content, f"{where}.content")):
            part = _read_part(
                as_dict(raw, f"{where}.content[{k}]"), f"{where}.content[{k}]", request
            )
            if part is not None:
                turn.content.append(part)
    return turn


def _read_tool(tool: dict[str, Any], where: str, request: NeutralRequest) -> None:
    if tool.get("type") not in (None, "custom"):
        request.unportable.append(f"{where}: a provider-run tool")
        return
    for key, value in tool.items():
        if key in _TOOL_FIELDS_DROPPED:
            request.dropped.append(key)
        elif key not in _TOOL_FIELDS and value is not None:
            request.unportable.append(unportable_field(f"{where}: field ", key))
    strict = optional_bool(tool.get("strict"), f"{where}.strict")
    request.tools.append(
        FunctionTool(
            name=as_str(tool.get("name"), f"{where}.name"),
            description=optional_str(tool.get("description"), f"{where}.description"),
            parameters=as_dict(tool.get("input_schema"), f"{where}.input_schema"),
            strict=STRICT_TOOLS_BY_DEFAULT[DIALECT] if strict is None else strict,
        )
    )


def _read_tool_choice(value: object, request: NeutralRequest) -> None:
    if value is None:
        return
    choice = as_dict(value, "tool_choice")
    kind = api_word(choice.get("type"))
    if optional_bool(choice.get("disable_parallel_tool_use"), "tool_choice.disable_parallel"):
        request.parallel_tool_calls = False
    words = TOOL_CHOICE_IN[DIALECT]
    picked: ToolChoice | None
    if kind == "tool":
        picked = ForcedTool(as_str(choice.get("name"), "tool_choice.name"))
    elif kind in words:
        picked = words[kind]
    else:
        request.unportable.append("tool_choice has no faithful translation")
        return
    request.tool_choice = picked


def _read_output_config(value: object, request: NeutralRequest) -> None:
    if value is None:
        return
    config = as_dict(value, "output_config")
    for key, setting in config.items():
        if key == "format" and setting is not None:
            fmt = as_dict(setting, "output_config.format")
            if fmt.get("type") != "json_schema":
                request.unportable.append("output_config.format has no faithful translation")
                continue
            # Anthropic always constrains the answer to the schema: OpenAI's strict mode.
            schema = as_dict(fmt.get("schema"), "output_config.format.schema")
            request.response_format = JsonSchemaFormat(schema, strict=True)
        elif setting is not None:
            request.unportable.append(unportable_field("output_config: field ", key))


# -- render -------------------------------------------------------------------------------------
def render(
    request: NeutralRequest, model: str | None, options: RenderOptions = DEFAULT_OPTIONS
) -> dict[str, Any]:
    """The request as a Messages API body for `model` (None: the request's own model).

    `max_tokens` is required by this API: a request without a cap gets
    `options.default_max_tokens`. Raises `Untranslatable` for what Anthropic cannot say.
    """
    ensure_expressible(request, DIALECT)
    body: dict[str, Any] = {}
    if (model or request.model) is not None:
        body["model"] = model or request.model
    body["max_tokens"] = request.max_output_tokens or options.default_max_tokens
    if request.system:
        single = text_or_none(request.system)
        body["system"] = single or [{"type": "text", "text": t} for t in request.system]
    body["messages"] = _render_messages(request.messages)
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
    choice = _render_tool_choice(request)
    if choice is not None:
        body["tool_choice"] = choice
    if isinstance(request.response_format, JsonSchemaFormat):
        schema = request.response_format.schema
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    for name in ("temperature", "top_p"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.stream:
        body["stream"] = True
    return body


def _render_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    gathering = False  # the last wire message is a user turn holding tool results
    for message in messages:
        if message.role == "tool":
            result = _render_tool_result(message)
            if gathering:
                out[-1]["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
                gathering = True
            continue
        if not message.content and not message.tool_calls:
            raise Untranslatable(f"an empty {message.role} message: no equivalent in {DIALECT}")
        blocks = [_render_part(part) for part in message.content]
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": arguments_object(c.arguments)}
            for c in message.tool_calls
        ]
        if gathering and message.role == "user":
            out[-1]["content"] += blocks  # text after the results, as Anthropic wants it
        else:
            single = text_or_none([b["text"] for b in blocks if b["type"] == "text"])
            content = single if single is not None and len(blocks) == 1 else blocks
            out.append({"role": message.role, "content": content})
        gathering = False
    return out


def _render_tool_result(message: Message) -> dict[str, Any]:
    if message.tool_call_id is None:
        raise Untranslatable("a tool result without the id of its call")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    texts = [part.text for part in message.content if isinstance(part, Text)]
    if len(texts) == len(message.content) and (single := text_or_none(texts)) is not None:
        block["content"] = single
    elif message.content:
        block["content"] = [_render_part(part) for part in message.content]
    if message.is_error:
        block["is_error"] = True
    return block


def _render_part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    inline = split_data_url(part.url)
    if inline is not None:
        media_type, data = inline
        if media_type not in ANTHROPIC_IMAGE_TYPES:
            raise Untranslatable(f"an image of a type {DIALECT} does not take")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if not part.url.startswith(("https://", "http://")):
        raise Untranslatable(f"an image reference {DIALECT} cannot fetch")
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _render_tool(tool: FunctionTool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["input_schema"] = tool.parameters
    if tool.strict:
        out["strict"] = True
    return out


def _render_tool_choice(request: NeutralRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if isinstance(choice, ForcedTool):
        out: dict[str, Any] = {"type": "tool", "name": choice.name}
    elif choice is not None:
        out = {"type": TOOL_CHOICE_OUT[DIALECT][choice]}
    elif request.parallel_tool_calls is False:
        out = {"type": "auto"}
    else:
        return None
    if request.parallel_tool_calls is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out
