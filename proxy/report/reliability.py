"""Functional reliability: is each answer usable on its own, whatever the primary said?

Per successful answer (errors are `error_rate`'s business), each check is True (broken), False
(fine) or None (does not apply):

- `empty`: no text (or only whitespace) and no tool call;
- `invalid_json`: the request asked for JSON (`response_format` json_object / json_schema, or
  the Responses API's `text.format`) and the text does not parse as JSON (a ```json fence is
  broken JSON for an application that parses the answer);
- `schema_invalid`: the request gave a JSON schema and the answer does not satisfy it;
- `invalid_tool_call`: the answer calls a tool the request did not declare, with arguments
  that do not parse, or with arguments that do not match the tool's declared parameters;
- `truncated`: `finish_reason` says the token limit cut it (`length`, `max_tokens`);
- `refused`: `finish_reason = content_filter`, or a refusal phrase in its first 400 characters
  (the `refusal` scorer's default phrases).

Schemas are the client's and treated as hostile, through the `json_schema_valid` scorer's own
validator factory (regexes on RE2, no remote `$ref`, bounded size); a schema it cannot use
leaves that check not applicable. Answers over `MAX_CHECKED_CHARS` are not parsed.

`shadowtap.report.selection` applies `check` while it selects the pairs: in SQL for the answers
whose outcome the SQL can settle (no JSON mode, no tool call, no refusal phrase possible), here
for the others only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shadowtap.scorers.refusal import DEFAULT_PHRASES

CHECKS = ("empty", "invalid_json", "schema_invalid", "invalid_tool_call", "truncated", "refused")
TRUNCATED = frozenset({"length", "max_tokens", "max_output_tokens"})
MAX_CHECKED_CHARS = 1_000_000  # JSON answers and tool arguments parsed at most this long
MAX_CALLS_CHECKED = 32  # tool calls per answer
REFUSAL_WINDOW = 400
PHRASES = tuple(" ".join(p.casefold().split()) for p in DEFAULT_PHRASES)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the checks need of one stored answer and the request it answered."""

    request_id: str
    ok: bool
    finish_reason: str | None
    blank: bool
    head: str | None
    json_text: str | None
    tool_calls: str | None
    json_mode: str | None
    schema_json: str | None
    tools_json: str | None


def check(answer: Answer) -> dict[str, bool | None]:
    """Each check's outcome for one answer; all None for a failed request."""
    if not answer.ok:
        return dict.fromkeys(CHECKS)
    calls = _calls(answer.tool_calls)
    parsed, parses = _parse(answer.json_text) if answer.json_mode else (None, False)
    schema_invalid: bool | None = None
    if answer.schema_json is not None and answer.json_mode == "json_schema":
        schema, _ = _parse(answer.schema_json)
        validity = _valid(schema, parsed) if parses else False
        schema_invalid = None if validity is None else not validity
    return {
        "empty": answer.blank and not calls,
        "invalid_json": None if not answer.json_mode or calls else not parses,
        "schema_invalid": None if calls else schema_invalid,
        "invalid_tool_call": _invalid_calls(calls, answer.tools_json) if calls else None,
        "truncated": answer.finish_reason in TRUNCATED,
        "refused": answer.finish_reason == "content_filter" or _refuses(answer.head),
    }


def _refuses(head: str | None) -> bool:
    if not head:
        return False
    folded = " ".join(head.replace("\u2019", "'").replace("\u2018", "'").casefold().split())
    return any(phrase in folded for phrase in PHRASES)


def _parse(text: str | None) -> tuple[Any, bool]:
    if text is None:
        return None, False
    try:
        return json.loads(text), True
    except (ValueError, RecursionError):
        return None, False


def _calls(text: str | None) -> list[dict[str, Any]]:
    """The stored tool calls ([{"id", "name", "arguments"}]), at most MAX_CALLS_CHECKED."""
    value, ok = _parse(text)
    if not ok or not isinstance(value, list):
        return []
    return [c for c in value if isinstance(c, dict)][:MAX_CALLS_CHECKED]


@functools.lru_cache(maxsize=256)  # requests reuse a handful of tool lists
def declared_tools(tools_json: str | None) -> dict[str, Any] | None:
    """Tool name -> its parameters schema (None when it declares none), from any dialect's
    `tools`: OpenAI chat `{"type": "function", "function": {...}}`, the Responses API's flat
    `{"type": "function", "name", "parameters"}`, Anthropic's `{"name", "input_schema"}`.
    None when the request's tools are unknown (no stored body)."""
    value, ok = _parse(tools_json)
    if not ok or not isinstance(value, list):
        return None
    tools: dict[str, Any] = {}
    for tool in value:
        if not isinstance(tool, dict):
            continue
        nested = tool.get("function")
        spec: dict[str, Any] = nested if isinstance(nested, dict) else tool
        name = spec.get("name")
        if isinstance(name, str):
            schema = spec.get("parameters", spec.get("input_schema"))
            tools[name] = schema if isinstance(schema, dict) else None
    return tools


def _invalid_calls(calls: Iterable[dict[str, Any]], tools_json: str | None) -> bool:
    tools = declared_tools(tools_json)
    for call in calls:
        name = call.get("name")
        if tools is not None and name not in tools:
            return True  # a tool the request never offered
        arguments = call.get("arguments")
        if arguments is None:
            continue  # not stored (storage.bodies = "none"): only the name can be checked
        if not isinstance(arguments, str) or len(arguments) > MAX_CHECKED_CHARS:
            continue
        value, parses = _parse(arguments or "{}")
        if not parses:
            return True
        schema = tools.get(name) if tools is not None and isinstance(name, str) else None
        if schema is not None and _valid(schema, value) is False:
            return True
    return False


def _valid(schema: Any, instance: Any) -> bool | None:
    """Does `instance` satisfy the schema? None when the schema cannot be used safely."""
    from jsonschema.exceptions import ValidationError
    from referencing.exceptions import Unresolvable
    from shadowtap.scorers.json_schema_valid import SchemaNotUsable
    from shadowtap.scorers.json_schema_valid import _build as build_validator

    if not isinstance(schema, dict):
        return None
    try:
        validator = build_validator(schema)
        error = next(iter(validator.iter_errors(instance)), None)
    except (SchemaNotUsable, Unresolvable, RecursionError, ValidationError):
        return None
    return error is None
