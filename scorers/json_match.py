"""`json_match`: field-level agreement of two JSON answers.

Both answers are parsed as JSON (a bare value or one ```json fenced block) and flattened to
leaf fields (`$.user.name`, `$.items[0].id`); the score is the share of fields, over the union
of both sides, whose values are equal. Numbers compare by value (1 == 1.0, but true != 1);
empty objects and arrays are leaves of their own.

* Not applicable (None) when the primary's answer is not JSON — nothing to agree with.
* 0 when the primary's answer is JSON and the target's is not.
* `ignore_keys`: a bare key name (`"id"`) is ignored at any depth; a dotted key path
  (`"meta.created_at"`, array indices left out) is ignored only there. Use it for fields that
  differ on every call by design: ids, timestamps.

    [scorers.fields]
    type = "json_match"
    ignore_keys = ["id", "meta.created_at"]
"""

from __future__ import annotations

from typing import Any

from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict
from shadowtap.scorers.jsontext import parse_json_answer

MAX_LISTED = 10  # differing paths named in detail; enough to debug, bounded in storage


class JsonMatchOptions(ScorerOptions):
    ignore_keys: list[str] = []


def _leaf(value: Any) -> Any:
    # bool is an int in Python: keep it apart so that true != 1, while 1 == 1.0.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    if value == {} or value == []:
        return ("empty", type(value).__name__)
    return value


class JsonMatch(CpuScorer[JsonMatchOptions]):
    Options = JsonMatchOptions

    def __init__(self, name: str, options: JsonMatchOptions) -> None:
        super().__init__(name, options)
        self._ignored = frozenset(options.ignore_keys)

    def flatten(self, value: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        # Iterative, so a deeply nested answer cannot hit the recursion limit.
        stack: list[tuple[str, tuple[str, ...], Any]] = [("$", (), value)]
        while stack:
            path, keys, node = stack.pop()
            if isinstance(node, dict) and node:
                for key, child in node.items():
                    child_keys = (*keys, str(key))
                    if key in self._ignored or ".".join(child_keys) in self._ignored:
                        continue
                    stack.append((f"{path}.{key}", child_keys, child))
            elif isinstance(node, list) and node:
                for index, child in enumerate(node):
                    stack.append((f"{path}[{index}]", keys, child))
            else:
                fields[path] = _leaf(node)
        return fields

    def score(self, pair: Pair) -> Result:
        try:
            primary = parse_json_answer(pair.primary.text)
        except ValueError:
            return Verdict(None, {"reason": "primary is not JSON"})
        try:
            target = parse_json_answer(pair.target.text)
        except ValueError:
            return Verdict(0.0, {"reason": "target is not JSON"})
        a, b = self.flatten(primary), self.flatten(target)
        paths = a.keys() | b.keys()
        if not paths:  # every field ignored
            return Verdict(None, {"reason": "no fields left after ignore_keys"})
        differing = sorted(p for p in paths if p not in a or p not in b or a[p] != b[p])
        agreeing = len(paths) - len(differing)
        return Verdict(
            agreeing / len(paths),
            {"fields": len(paths), "agreeing": agreeing, "differing": differing[:MAX_LISTED]},
        )
