"""What a simulated model answers to a chat-completions request: text, JSON or a tool call.

The *base* answer is a pure function of the request's messages, tools and response format
(never of `model`, which shadowtap rewrites per candidate), so every profile starts from the
same answer; a `Style` then decides how far each profile drifts from it, using a
`random.Random` owned by the server so run-to-run noise is real but seedable in tests.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from shadowtap.demo import text as lang

RISKY = re.compile(r"\b(hack into|steal|break into|malware|phishing|disable the alarm)\b", re.I)
KEY_LIST = re.compile(r"\b(?:keys|fields)\s+([a-z_]+(?:\s*(?:,|and)\s*[a-z_]+)*)", re.I)
SENTENCE_END = re.compile(r"(?<=[.!?]) ")
HINTS = {
    "priority": ("low", "medium", "high"),
    "category": ("billing", "bug", "feature request", "account"),
    "sentiment": ("positive", "mixed", "negative"),
}
CITIES = ("Lisbon", "Oslo", "Nairobi", "Osaka", "Denver", "Lyon")


@dataclass(frozen=True, slots=True)
class Style:
    """How a profile departs from the shared base answer (all rates are per response)."""

    noise_rate: float = 0.0  # reword one sentence / one string value (run-to-run variation)
    paraphrase: bool = False  # reword everything and restructure
    json_break_rate: float = 0.0  # emit invalid JSON in JSON mode
    tool_drift_rate: float = 0.0  # pick other argument values for a tool call
    tool_break_rate: float = 0.0  # call an undeclared tool, or with arguments that do not fit


@dataclass(slots=True)
class Answer:
    text: str | None
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # id, name, arguments
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def request_seed(body: dict[str, Any]) -> int:
    messages = [
        (m.get("role"), message_text(m), m.get("tool_call_id")) for m in body.get("messages", [])
    ]
    tools = [t.get("function", {}).get("name") for t in body.get("tools") or []]
    return lang.digest(messages, tools, (body.get("response_format") or {}).get("type"))


def answer(body: dict[str, Any], style: Style, rng: random.Random) -> Answer:
    messages: list[dict[str, Any]] = body.get("messages") or []
    seed = request_seed(body)
    prompt = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    last_role = messages[-1].get("role") if messages else None
    tool = _chosen_tool(body, prompt) if last_role != "tool" else None
    fmt = body.get("response_format") or {}
    if tool is not None:
        out = _tool_call(tool, prompt, seed, style, rng)
    elif fmt.get("type") in ("json_object", "json_schema"):
        out = Answer(text=_json_text(fmt, prompt, seed, style, rng))
    elif RISKY.search(prompt):
        out = Answer(text=lang.refusal(rng, style.paraphrase))
    else:
        lead = _tool_result_lead(messages[-1]) if last_role == "tool" else []
        sentences = lead + lang.compose(prompt, seed)
        if style.paraphrase:
            sentences = lang.paraphrase(sentences, rng)
        elif rng.random() < style.noise_rate:
            sentences = lang.add_noise(sentences, rng)
        out = Answer(text=" ".join(sentences))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if out.text is not None and isinstance(limit, int) and lang.count_tokens(out.text) > limit:
        out.text = " ".join(out.text.split(" ")[: max(1, limit * 3 // 4)])
        out.finish_reason = "length"
    out.prompt_tokens = sum(lang.count_tokens(message_text(m)) + 4 for m in messages)
    out.completion_tokens = lang.count_tokens(out.text or "") + sum(
        lang.count_tokens(c["arguments"]) for c in out.tool_calls
    )
    return out


def _chosen_tool(body: dict[str, Any], prompt: str) -> dict[str, Any] | None:
    """The tool to call: the forced one, or the one whose name and description share most words
    with the prompt (no call when none does, unless `tool_choice` is "required")."""
    tools = [t["function"] for t in body.get("tools") or [] if isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        return next((t for t in tools if t.get("name") == name), None)
    words = {w.lower() for w in lang.WORD.findall(prompt)}

    def overlap(tool: dict[str, Any]) -> int:
        about = f"{tool.get('name', '').replace('_', ' ')} {tool.get('description', '')}"
        return len(words & {w.lower() for w in lang.WORD.findall(about)} - lang.STOPWORDS)

    best = max(tools, key=overlap)
    return best if overlap(best) > 0 or choice == "required" else None


def _tool_call(
    tool: dict[str, Any], prompt: str, seed: int, style: Style, rng: random.Random
) -> Answer:
    schema = tool.get("parameters") or {"type": "object", "properties": {}}
    args = instance(schema, prompt, random.Random(seed))
    if rng.random() < style.tool_drift_rate:
        args = _drift(args, schema, rng)
    call = {
        "id": f"call_{seed:016x}"[:29],
        "name": str(tool.get("name", "tool")),
        "arguments": orjson.dumps(args).decode(),
    }
    if rng.random() < style.tool_break_rate:
        call = _broken(call, rng)
    return Answer(text=None, tool_calls=[call], finish_reason="tool_calls")


def _broken(call: dict[str, str], rng: random.Random) -> dict[str, str]:
    """What a model weak at tool use emits: a tool name that was never declared, arguments cut
    off mid-JSON, or arguments in a shape the tool's parameters do not allow."""
    kind = rng.choice(("unknown tool", "cut arguments", "wrong shape"))
    if kind == "unknown tool":
        return {**call, "name": call["name"].replace("_", "") + "_v2"}
    if kind == "cut arguments":
        return {**call, "arguments": call["arguments"][: max(1, len(call["arguments"]) // 2)]}
    return {**call, "arguments": orjson.dumps({"input": call["arguments"]}).decode()}


def _tool_result_lead(message: dict[str, Any]) -> list[str]:
    """Open the follow-up answer with what the tool returned, as a model would."""
    try:
        result = orjson.loads(message_text(message))
    except orjson.JSONDecodeError:
        return [f"The tool returned: {message_text(message)[:80]}."]
    if isinstance(result, dict) and result:
        facts = ", ".join(f"{k} is {v}" for k, v in list(result.items())[:3])
        return [f"According to the tool, {facts}."]
    return ["The tool returned no details."]


def _json_text(
    fmt: dict[str, Any], prompt: str, seed: int, style: Style, rng: random.Random
) -> str:
    pick = random.Random(seed)
    if fmt.get("type") == "json_schema":
        value = instance(fmt.get("json_schema", {}).get("schema") or {}, prompt, pick)
    else:
        value = _generic_object(prompt, seed, pick)
    # No run-to-run noise here: structured output is far steadier than prose, and a noisy
    # JSON floor would need many more pairs before the json_match gate could pass anything.
    if style.paraphrase:
        value = _reword_strings(value, rng)
    out = orjson.dumps(value).decode()
    if rng.random() < style.json_break_rate:
        out = rng.choice(
            (
                f"```json\n{out}\n```",
                out[: max(1, len(out) * 2 // 3)],  # cut off mid-value
                f"Here is the JSON you asked for:\n{out}",
                out.replace('"', "'"),
            )
        )
    return out


def _generic_object(prompt: str, seed: int, pick: random.Random) -> dict[str, Any]:
    match = KEY_LIST.search(prompt)
    if match:
        names = [k for k in re.split(r"\s*(?:,|\band\b)\s*", match.group(1)) if k]
        return {k: instance({"type": "string"}, prompt, pick, name=k) for k in names}
    words = lang.keywords(prompt)
    return {
        "topic": words[0],
        "summary": " ".join(lang.compose(prompt, seed, sentences=2)),
        "keywords": words,
        "sentiment": pick.choice(("positive", "neutral", "negative")),
        "confidence": round(pick.uniform(0.6, 0.99), 2),
    }


def instance(schema: dict[str, Any], prompt: str, pick: random.Random, name: str = "") -> Any:
    """A plausible value that satisfies a (simple) JSON schema, filled from the prompt."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return pick.choice(schema["enum"])
    for union in ("anyOf", "oneOf"):
        if schema.get(union):
            return instance(schema[union][0], prompt, pick, name)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: instance(v, prompt, pick, name=k) for k, v in props.items()}
    if kind == "array":
        low = schema.get("minItems", 1)
        high = max(low, min(schema.get("maxItems", 3), 3))
        items = schema.get("items") or {"type": "string"}
        return [instance(items, prompt, pick, name) for _ in range(pick.randint(low, high))]
    if kind == "integer":
        return pick.randint(schema.get("minimum", 1), schema.get("maximum", 100))
    if kind == "number":
        return round(pick.uniform(schema.get("minimum", 0), schema.get("maximum", 1)), 2)
    if kind == "boolean":
        return pick.random() < 0.5
    if kind == "null":
        return None
    return _string_for(name, schema, prompt, pick)


def _string_for(name: str, schema: dict[str, Any], prompt: str, pick: random.Random) -> str:
    lowered = name.lower()
    if schema.get("format") == "date" or lowered.endswith("date"):
        return f"2025-{pick.randint(1, 12):02d}-{pick.randint(1, 28):02d}"
    if lowered in ("city", "location", "place", "destination"):
        proper = [w for w in lang.WORD.findall(prompt)[1:] if w[:1].isupper()]
        return proper[0] if proper else pick.choice(CITIES)
    if lowered in HINTS:
        return pick.choice(HINTS[lowered])
    if "email" in lowered:
        return f"{lang.keywords(prompt, 1)[0].replace(' ', '.')}@example.com"
    if lowered in ("summary", "description", "reason", "explanation", "answer", "text"):
        return " ".join(lang.compose(prompt, pick.getrandbits(32), sentences=2))
    if lowered in ("query", "question", "search"):
        return " ".join(lang.keywords(prompt, 3))
    return pick.choice(lang.keywords(prompt, 4))


def _reword_strings(value: Any, rng: random.Random) -> Any:
    """Reword every sentence-like string (one with spaces), leaving names and enums alone."""
    if isinstance(value, str):
        if " " not in value:
            return value
        return " ".join(lang.reword(s, rng, swaps=None) for s in SENTENCE_END.split(value))
    if isinstance(value, dict):
        return {k: _reword_strings(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_reword_strings(v, rng) for v in value]
    return value


def _drift(args: Any, schema: dict[str, Any], rng: random.Random) -> Any:
    """Another model's reading of the same request: enums re-picked, text reworded, numbers off."""
    if not isinstance(args, dict):
        return args
    props = schema.get("properties") or {}
    out = dict(args)
    for key, value in args.items():
        spec = props.get(key) or {}
        if spec.get("enum"):
            out[key] = rng.choice(spec["enum"])
        elif isinstance(value, str):
            out[key] = lang.reword(value, rng, swaps=None) if " " in value else value.lower()
        elif isinstance(value, int) and not isinstance(value, bool):
            out[key] = value + rng.choice((-1, 1))
    return out
