"""JSON Schema's regex keywords evaluated with RE2, so no client regex ever reaches Python's `re`.

A client's `response_format.json_schema` is hostile input: `{"pattern": "^(a+)+$"}` against an
answer of 40 `a` and a `!` takes Python's backtracking `re` hours. RE2 (`google-re2`) matches in
time linear in the text (times the compiled pattern's size, which RE2 bounds by `max_mem`), and
refuses what it cannot do that way — lookarounds, backreferences, `\\Z` — with an error, never a
fallback. Every place jsonschema runs a schema's regex is replaced here:

* `pattern` and `patternProperties`, and `additionalProperties` (which matches property names
  against `patternProperties` to find the extra ones) — as keyword implementations given to
  `jsonschema.validators.extend`;
* `format: "regex"` — schemas are checked against their metaschema with no format checker;
* `unevaluatedProperties` next to `patternProperties` would still match names with `re` inside
  jsonschema, so such a schema is refused (`UnsupportedPattern`), as is a pattern RE2 cannot
  compile. Both are checked once per schema, before any answer is validated, so every answer to
  one request gets the same "not applicable".

Time is still the text's length times the pattern's size, which can be seconds for a 1 MB
string; the scoring workers' hard time limit is what bounds that.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import re2
from jsonschema import ValidationError, validators

# RE2's own default; a pattern needing more does not compile (RE2: "pattern too large").
MAX_MEM_BYTES = 8 << 20
# Compiled patterns kept: each may grow to MAX_MEM_BYTES, so the cache's worst case is bounded.
MAX_CACHED = 16
MAX_REASON_CHARS = 120

_OPTIONS = re2.Options()
_OPTIONS.max_mem = MAX_MEM_BYTES
_OPTIONS.log_errors = False  # RE2 would log every refused pattern (client text) to stderr
_compiled: OrderedDict[str, Any] = OrderedDict()


class UnsupportedPattern(ValueError):
    """The schema needs a regex feature RE2 does not have; the message says which."""


def compile_pattern(pattern: str) -> Any:
    """The RE2 program for `pattern` (cached), or `UnsupportedPattern`."""
    found = _compiled.get(pattern)
    if found is not None:
        _compiled.move_to_end(pattern)
        return found
    try:
        program = re2.compile(pattern, _OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args else "compile failed"
        raise UnsupportedPattern(
            f"pattern not supported by RE2 ({reason[:MAX_REASON_CHARS]})"
        ) from None
    finally:
        re2.purge()  # re2's module cache (128 programs) would keep evicted ones alive
    _compiled[pattern] = program
    if len(_compiled) > MAX_CACHED:
        _compiled.popitem(last=False)
    return program


def _subschemas(schema: Any) -> Iterator[dict[str, Any]]:
    """Every object in the schema document (iteratively: nesting depth is the client's)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def check_patterns(schema: Any) -> None:
    """Raise `UnsupportedPattern` unless every regex of the schema runs on RE2.

    Conservative on purpose: an object that only looks like a schema (a property named
    "pattern") is checked too; a false alarm costs a "not applicable", never a backtrack."""
    uses_unevaluated = uses_pattern_properties = False
    for node in _subschemas(schema):
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            compile_pattern(pattern)
        names = node.get("patternProperties")
        if isinstance(names, dict):
            uses_pattern_properties = True
            for name in names:
                compile_pattern(name)
        uses_unevaluated = uses_unevaluated or "unevaluatedProperties" in node
    if uses_unevaluated and uses_pattern_properties:
        raise UnsupportedPattern(
            "unevaluatedProperties with patternProperties is not evaluated (jsonschema would "
            "match the names with a backtracking regex)"
        )


def _matches_any(patterns: Any, name: str) -> bool:
    return any(compile_pattern(pattern).search(name) for pattern in patterns)


# The three keyword implementations below mirror jsonschema's own (jsonschema/_keywords.py),
# with RE2 in place of `re`; their signatures are jsonschema's keyword-function protocol.


def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not compile_pattern(patrn).search(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for regex, subschema in patterns.items():
        program = compile_pattern(regex)
        for name, value in instance.items():
            if program.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=regex)


def additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [
        name
        for name in instance
        if name not in properties and not (patterns and _matches_any(patterns, name))
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        joined = ", ".join(repr(each) for each in sorted(extras, key=str))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(each) for each in sorted(patterns))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({joined} {verb} unexpected)"
            )


_linear: dict[type, type] = {}


def linear_validator_class(cls: type) -> Any:
    """`cls` (a jsonschema validator class, any draft) with the regex keywords on RE2."""
    extended = _linear.get(cls)
    if extended is None:
        extended = validators.extend(
            cls,
            validators={
                "pattern": pattern,
                "patternProperties": pattern_properties,
                "additionalProperties": additional_properties,
            },
        )
        _linear[cls] = extended
    return extended
