"""`openai-responses` requests (`POST /v1/responses`) to and from the neutral model.

`instructions` and leading system/developer messages are the neutral system list; `input` is
a string (one user turn) or items: messages, `function_call` items (joined to the assistant
turn before them) and `function_call_output` items (tool turns). Function tools are strict
unless they say `strict: false`, so that default is made explicit both ways. `reasoning`
items passed back from earlier turns are dropped (another model cannot read them);
`previous_response_id`, stored prompts, conversations, hosted tools and other item types keep
state or tools at OpenAI and make the request unportable. Responses has no stop sequences.

Example:
    request = parse({"model": "gpt-4.1", "instructions": "Be brief.", "input": "Hi"})
    render(request, "gpt-4.1-mini")
    # {"model": "gpt-4.1-mini", "instructions": "Be brief.",
    #  "input": [{"role": "user", "content": "Hi"}], "store": false}
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
    ToolUse,
    Untranslatable,
)
from shadowtap.dialects.tables import (
    OPENAI_RESPONSES,
    ROLES_IN,
    STRICT_TOOLS_BY_DEFAULT,
    TOOL_CHOICE_IN,
    TOOL_CHOICE_OUT,
    ensure_expressible,
    sort_fields,
)
from shadowtap.dialects.wire import (
    api_word,
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

DIALECT = OPENAI_RESPONSES
_TEXT_PARTS = frozenset({"input_text", "output_text"})
_PART_REASONS = {
    "input_file": "file input",
    "input_audio": "audio input",
    "refusal": "a refusal in the history",
}
# Fields on input items that only identify them at OpenAI (ids, states): not the question.
_ITEM_BOOKKEEPING = frozenset({"type", "id", "status", "phase"})
_FUNCTION_TOOL_FIELDS = frozenset({"type", "name", "description", "parameters", "strict"})
_LOGPROBS = "message.output_text.logprobs"


# -- parse --------------------------------------------------------------------------------------
def parse(body: dict[str, Any]) -> NeutralRequest:
    """A Responses API request body as a `NeutralRequest` (see the module example)."""
    request = NeutralRequest(dialect=DIALECT, model=optional_str(body.get("model"), "model"))
    sort_fields(body, DIALECT, request)
    instructions = optional_str(body.get("instructions"), "instructions")
    if instructions:
        request.system.append(instructions)
    _read_input(body.get("input"), request)
    for i, tool in enumerate(as_list(body.get("tools") or [], "tools")):
        _read_tool(as_dict(tool, f"tools[{i}]"), f"tools[{i}]", request)
    _read_tool_choice(body.get("tool_choice"), request)
    if optional_bool(body.get("parallel_tool_calls"), "parallel_tool_calls") is False:
        request.parallel_tool_calls = False
    _read_text_config(body.get("text"), request)
    _read_reasoning(body.get("reasoning"), request)
    for name in as_list(body.get("include") or [], "include"):
        if name == _LOGPROBS:
            request.unportable.append("include asks for logprobs")
    if body.get("include"):
        request.dropped.append("include")
    request.max_output_tokens = optional_int(body.get("max_output_tokens"), "max_output_tokens")
    request.temperature = optional_number(body.get("temperature"), "temperature")
    request.top_p = optional_number(body.get("top_p"), "top_p")
    request.stream = optional_bool(body.get("stream"), "stream") or False
    return request.settle()


def _read_input(value: object, request: NeutralRequest) -> None:
    if value is None:
        return
    if isinstance(value, str):
        request.messages.append(Message("user", [Text(value)] if value else []))
        return
    for i, raw in enumerate(as_list(value, "input")):
        where = f"input[{i}]"
        item = as_dict(raw, where)
        kind = item.get("type", "message")
        if kind == "message":
            _read_message(item, where, request)
        elif kind == "function_call":
            call = ToolUse(
                id=as_str(item.get("call_id"), f"{where}.call_id"),
                name=as_str(item.get("name"), f"{where}.name"),
                arguments=as_str(item.get("arguments"), f"{where}.arguments"),
            )
            last = request.messages[-1] if request.messages else None
            if last is not None and last.role == "assistant":
                last.tool_calls.append(call)
            else:
                request.messages.append(Message("assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            call_id = as_str(item.get("call_id"), f"{where}.call_id")
            output = _read_parts(item.get("output"), f"{where}.output", request)
            request.messages.append(Message("tool", output, tool_call_id=call_id))
        elif kind == "reasoning":
            request.dropped.append("reasoning")
        else:
            request.unportable.append(f"{where}: an item of type {api_word(kind)}")


def _read_message(item: dict[str, Any], where: str, request: NeutralRequest) -> None:
    role = ROLES_IN[DIALECT].get(api_word(item.get("role")))
    if role is None:
        raise Untranslatable(f"{where}.role is not user, assistant, system or developer")
    for key, value in item.items():
        if key not in _ITEM_BOOKKEEPING and key not in ("role", "content") and value is not None:
            request.unportable.append(unportable_field(f"{where}: field ", key))
    content = _read_parts(item.get("content"), f"{where}.content", request)
    if role == "system" and not request.messages:
        if any(not isinstance(part, Text) for part in content):
            request.unportable.append(f"{where}: an image in the instructions")
        request.system += [part.text for part in content if isinstance(part, Text)]
    else:
        request.messages.append(Message(role, content))


def _read_parts(content: object, where: str, request: NeutralRequest) -> list[Part]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [Text(content)]
    parts: list[Part] = []
    for j, raw in enumerate(as_list(content, where)):
        part = as_dict(raw, f"{where}[{j}]")
        kind = api_word(part.get("type"))
        if kind in _TEXT_PARTS:
            text = as_str(part.get("text"), f"{where}[{j}].text")
            if text:
                parts.append(Text(text))
        elif kind == "input_image" and part.get("image_url") is not None:
            detail = optional_str(part.get("detail"), f"{where}[{j}].detail")
            url = as_str(part.get("image_url"), f"{where}[{j}].image_url")
            parts.append(Image(url, None if detail == "auto" else detail))
        elif kind == "input_image":
            request.unportable.append(f"{where}[{j}]: an image stored with the provider")
        else:
            reason = _PART_REASONS.get(kind, "a content part of an unknown type")
            request.unportable.append(f"{where}[{j}]: {reason}")
    return parts


def _read_tool(tool: dict[str, Any], where: str, request: NeutralRequest) -> None:
    if tool.get("type") != "function":
        request.unportable.append(f"{where}: a provider-run tool")
        return
    for key, value in tool.items():
        if key not in _FUNCTION_TOOL_FIELDS and value is not None:
            request.unportable.append(unportable_field(f"{where}: field ", key))
    parameters = tool.get("parameters")
    strict = optional_bool(tool.get("strict"), f"{where}.strict")
    request.tools.append(
        FunctionTool(
            name=as_str(tool.get("name"), f"{where}.name"),
            description=optional_str(tool.get("description"), f"{where}.description"),
            parameters=dict(EMPTY_PARAMETERS)
            if parameters is None
            else as_dict(parameters, f"{where}.parameters"),
            strict=STRICT_TOOLS_BY_DEFAULT[DIALECT] if strict is None else strict,
        )
    )


def _read_tool_choice(value: object, request: NeutralRequest) -> None:
    if value is None:
        return
    words = TOOL_CHOICE_IN[DIALECT]
    if isinstance(value, str) and value in words:
        request.tool_choice = words[value]
    elif isinstance(value, dict) and value.get("type") == "function":
        request.tool_choice = ForcedTool(as_str(value.get("name"), "tool_choice.name"))
    else:
        request.unportable.append("tool_choice has no faithful translation")


def _read_text_config(value: object, request: NeutralRequest) -> None:
    if value is None:
        return
    config = as_dict(value, "text")
    request.verbosity = optional_str(config.get("verbosity"), "text.verbosity")
    request.response_format = _read_format(config.get("format"), request)
    for key, setting in config.items():
        if key not in ("format", "verbosity") and setting is not None:
            request.unportable.append(unportable_field("text: field ", key))


def _read_format(value: object, request: NeutralRequest) -> ResponseFormat | None:
    if value is None:
        return None
    fmt = as_dict(value, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonObjectFormat()
    if kind == "json_schema":
        return JsonSchemaFormat(
            schema=as_dict(fmt.get("schema"), "text.format.schema"),
            name=optional_str(fmt.get("name"), "text.format.name"),
            description=optional_str(fmt.get("description"), "text.format.description"),
            strict=optional_bool(fmt.get("strict"), "text.format.strict"),
        )
    request.unportable.append("text.format has no faithful translation")
    return None


def _read_reasoning(value: object, request: NeutralRequest) -> None:
    if value is None:
        return
    config = as_dict(value, "reasoning")
    request.reasoning_effort = optional_str(config.get("effort"), "reasoning.effort")
    for key, setting in config.items():
        if key in ("summary", "generate_summary"):  # what is shown of the reasoning, not asked
            request.dropped.append(f"reasoning.{key}")
        elif key != "effort" and setting is not None:
            request.unportable.append(unportable_field("reasoning: field ", key))


# -- render -------------------------------------------------------------------------------------
def render(
    request: NeutralRequest, model: str | None, options: RenderOptions = DEFAULT_OPTIONS
) -> dict[str, Any]:
    """The request as a Responses API body for `model` (None: the request's own model).

    Always `store: false`: a shadow's answer is scored here, not kept at OpenAI. Raises
    `Untranslatable` for what the Responses API cannot say (stop sequences).
    """
    ensure_expressible(request, DIALECT)
    body: dict[str, Any] = {}
    if (model or request.model) is not None:
        body["model"] = model or request.model
    if request.system:
        body["instructions"] = request.system[0]
    items: list[dict[str, Any]] = [
        {"role": "system", "content": text} for text in request.system[1:]
    ]
    for message in request.messages:
        items += _render_items(message)
    body["input"] = items
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
    if isinstance(request.tool_choice, ForcedTool):
        body["tool_choice"] = {"type": "function", "name": request.tool_choice.name}
    elif request.tool_choice is not None:
        body["tool_choice"] = TOOL_CHOICE_OUT[DIALECT][request.tool_choice]
    if request.parallel_tool_calls is False:
        body["parallel_tool_calls"] = False
    text: dict[str, Any] = {}
    if request.response_format is not None:
        text["format"] = _render_format(request.response_format)
    if request.verbosity is not None:
        text["verbosity"] = request.verbosity
    if text:
        body["text"] = text
    if request.reasoning_effort is not None:
        body["reasoning"] = {"effort": request.reasoning_effort}
    for name in ("max_output_tokens", "temperature", "top_p"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.stream:
        body["stream"] = True
    body["store"] = False
    return body


def _render_items(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        if message.tool_call_id is None:
            raise Untranslatable("a tool result without the id of its call")
        output = _render_parts(message.content)
        return [{"type": "function_call_output", "call_id": message.tool_call_id, "output": output}]
    items = []
    if message.content or not message.tool_calls:
        items.append({"role": message.role, "content": _render_parts(message.content)})
    items += [
        {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
        for c in message.tool_calls
    ]
    return items


def _render_parts(parts: list[Part]) -> str | list[dict[str, Any]]:
    texts = [part.text for part in parts if isinstance(part, Text)]
    if len(texts) == len(parts):
        single = text_or_none(texts)
        if single is not None or not parts:
            return single or ""
    rendered: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            rendered.append({"type": "input_text", "text": part.text})
        else:
            detail = part.detail or "auto"
            rendered.append({"type": "input_image", "image_url": part.url, "detail": detail})
    return rendered


def _render_tool(tool: FunctionTool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["parameters"] = tool.parameters
    out["strict"] = tool.strict  # explicit: this API's default (strict) is not the others'
    return out


def _render_format(fmt: ResponseFormat) -> dict[str, Any]:
    if isinstance(fmt, JsonObjectFormat):
        return {"type": "json_object"}
    out: dict[str, Any] = {"type": "json_schema", "name": fmt.name or SCHEMA_NAME}
    out["schema"] = fmt.schema
    if fmt.description is not None:
        out["description"] = fmt.description
    if fmt.strict is not None:
        out["strict"] = fmt.strict
    return out
