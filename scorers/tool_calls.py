"""`tool_calls`: do the two answers call the same tools with the same arguments?

Each of the primary's calls is paired with an unused call of the target's: a call with the
same name and equal arguments counts 1, the same name with different arguments counts 0.5.
The score is the sum over max(calls on either side), so a missing or extra call costs as much
as a wrong one. Arguments are compared as parsed JSON, so `{"a":1,"b":2}` equals
`{"b": 2, "a": 1}`; arguments that are not valid JSON compare as trimmed text. Call order and
call ids are ignored (parallel tool calls arrive in any order).

Not applicable when neither answer made a tool call; 0 when only one did.

    [scorers.tools]
    type = "tool_calls"
    threshold = 1.0
"""

from __future__ import annotations

import json

from shadowtap.completion import ToolCall
from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict
from shadowtap.scorers.jsontext import canonical_json

SAME_NAME_CREDIT = 0.5  # right tool, wrong arguments: better than the wrong tool


def canonical_arguments(call: ToolCall) -> str:
    try:
        return canonical_json(json.loads(call.arguments or "{}"))
    except ValueError:
        return call.arguments.strip()


class ToolCalls(CpuScorer[ScorerOptions]):
    def score(self, pair: Pair) -> Result:
        primary, target = pair.primary.tool_calls, pair.target.tool_calls
        if not primary and not target:
            return None
        names = {
            "primary": sorted(c.name for c in primary),
            "target": sorted(c.name for c in target),
        }
        unused = [(c.name, canonical_arguments(c)) for c in target]
        credit = 0.0
        # Exact matches first, so a same-name partial match never steals a call's exact twin.
        partial: list[str] = []
        for call in primary:
            key = (call.name, canonical_arguments(call))
            if key in unused:
                unused.remove(key)
                credit += 1.0
            else:
                partial.append(call.name)
        for name in partial:
            match = next((i for i, (n, _) in enumerate(unused) if n == name), None)
            if match is not None:
                unused.pop(match)
                credit += SAME_NAME_CREDIT
        return Verdict(credit / max(len(primary), len(target)), names)
