"""`json_schema_valid`: does an answer validate against the JSON schema the request asked for?

A per-response reliability check, not a comparison: when the request carried
`response_format = {"type": "json_schema", "json_schema": {"schema": {...}}}`, each answer —
the primary's (stored as target "primary") and every shadow's — scores 1 when its text parses
as JSON (bare or in one ```json fenced block) and validates against that schema, else 0, with
the first validation error in `detail`.

The schema is the client's, so it is treated as hostile:

* its regexes (`pattern`, `patternProperties`) run on RE2, in linear time
  (`shadowtap.scorers.schema_regex`); a pattern RE2 cannot run (lookaround, backreference)
  makes the pair not applicable, never a backtracking fallback;
* `$ref`s are resolved inside the schema only: a remote one (`http://…`, `file://…`) is never
  fetched, and makes the pair not applicable;
* a schema over `MAX_SCHEMA_CHARS`, or nested too deeply to walk, is not applicable too.

Not applicable (`detail.reason` says why) also when the request asked for no schema, or when
the schema itself is invalid (that is the client's bug).

    [scorers.schema]
    type = "json_schema_valid"
    threshold = 1.0
"""

from __future__ import annotations

import functools
import json
from typing import Any

from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict
from shadowtap.scorers.jsontext import canonical_json, parse_json_answer

MAX_MESSAGE_CHARS = 200  # validation messages quote the instance; keep detail small
# Structured-output schemas are a few kB; a cached validator holds its schema, so bound both.
MAX_SCHEMA_CHARS = 64 * 1024


class SchemaNotUsable(ValueError):
    """The schema cannot be evaluated safely; the message is the stored reason."""


def requested_schema(request: dict[str, Any] | None) -> dict[str, Any] | None:
    response_format = (request or {}).get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


@functools.lru_cache(maxsize=32)  # requests reuse a handful of schemas
def _validator(schema_text: str) -> Any:
    # Heavy imports, only once this scorer is configured (and then in a scoring worker).
    from jsonschema.validators import validator_for
    from referencing import Registry
    from shadowtap.scorers.schema_regex import check_patterns, linear_validator_class

    schema = json.loads(schema_text)
    cls: Any = validator_for(schema)  # the stubs' protocol lacks check_schema's format_checker
    # No format checker: the metaschema's `format: regex` would compile the client's patterns
    # with `re`. Validation never asserts formats either (jsonschema's default).
    cls.check_schema(schema, format_checker=None)  # raises SchemaError
    check_patterns(schema)  # raises UnsupportedPattern
    # An empty registry: `$ref`s resolve within the schema (and the metaschemas jsonschema
    # ships); jsonschema's default would fetch any other URI with urlopen.
    return linear_validator_class(cls)(schema, registry=Registry())


def _build(schema: dict[str, Any]) -> Any:
    from jsonschema.exceptions import SchemaError
    from shadowtap.scorers.schema_regex import UnsupportedPattern

    try:
        text = canonical_json(schema)
    except RecursionError:
        raise SchemaNotUsable("schema nested too deeply") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise SchemaNotUsable(f"schema over {MAX_SCHEMA_CHARS} characters")
    try:
        return _validator(text)
    except SchemaError as error:
        raise SchemaNotUsable(f"invalid schema: {error.message}"[:MAX_MESSAGE_CHARS]) from None
    except UnsupportedPattern as error:
        raise SchemaNotUsable(str(error)[:MAX_MESSAGE_CHARS]) from None
    except RecursionError:
        raise SchemaNotUsable("schema nested too deeply") from None


class JsonSchemaValid(CpuScorer[ScorerOptions]):
    per_response = True
    reads_request = True  # the schema is in the request

    def score(self, pair: Pair) -> Result:
        from jsonschema import exceptions
        from referencing.exceptions import Unresolvable

        schema = requested_schema(pair.request)
        if schema is None:
            return None
        try:
            validator = _build(schema)
        except SchemaNotUsable as unusable:
            return Verdict(None, {"reason": str(unusable)})
        try:
            answer = parse_json_answer(pair.target.text)
        except ValueError:
            return Verdict(0.0, {"valid": False, "error": "not JSON"})
        except RecursionError:
            return Verdict(None, {"reason": "answer nested too deeply to parse"})
        try:
            error = exceptions.best_match(validator.iter_errors(answer))
        except Unresolvable:
            reason = "unresolvable $ref (only references within the schema are followed)"
            return Verdict(None, {"reason": reason})
        except RecursionError:
            return Verdict(None, {"reason": "schema or answer nested too deeply to validate"})
        if error is None:
            return Verdict(1.0, {"valid": True})
        return Verdict(
            0.0,
            {
                "valid": False,
                "error": error.message[:MAX_MESSAGE_CHARS],
                "path": error.json_path[:MAX_MESSAGE_CHARS],
            },
        )
