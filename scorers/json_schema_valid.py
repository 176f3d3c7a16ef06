"""`json_schema_valid`: does an answer validate against the JSON schema the request asked for?

A per-response reliability check, not a comparison: when the request carried
`response_format = {"type": "json_schema", "json_schema": {"schema": {...}}}`, each answer —
the primary's (stored as target "primary") and every shadow's — scores 1 when its text parses
as JSON (bare or in one ```json fence) and validates against that schema, else 0, with the
first validation error in `detail`. Not applicable when the request asked for no schema, or
when the schema itself is invalid (`detail.reason` says so; that is the client's bug).

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


def requested_schema(request: dict[str, Any] | None) -> dict[str, Any] | None:
    response_format = (request or {}).get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


@functools.lru_cache(maxsize=128)  # thread-safe; requests reuse a handful of schemas
def _validator(schema_text: str) -> Any:
    from jsonschema.validators import validator_for  # heavy import, only when configured

    schema = json.loads(schema_text)
    cls = validator_for(schema)
    cls.check_schema(schema)  # raises SchemaError
    return cls(schema)


class JsonSchemaValid(CpuScorer[ScorerOptions]):
    per_response = True

    def score(self, pair: Pair) -> Result:
        from jsonschema import exceptions  # heavy; only once this scorer is configured

        schema = requested_schema(pair.request)
        if schema is None:
            return None
        try:
            validator = _validator(canonical_json(schema))
        except exceptions.SchemaError as error:
            return Verdict(None, {"reason": f"invalid schema: {error.message}"[:MAX_MESSAGE_CHARS]})
        try:
            answer = parse_json_answer(pair.target.text)
        except ValueError:
            return Verdict(0.0, {"valid": False, "error": "not JSON"})
        error = exceptions.best_match(validator.iter_errors(answer))
        if error is None:
            return Verdict(1.0, {"valid": True})
        return Verdict(
            0.0,
            {
                "valid": False,
                "error": error.message[:MAX_MESSAGE_CHARS],
                "path": error.json_path,
            },
        )
