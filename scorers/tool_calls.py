"""`tool_calls`: do the two answers call the same tools with the same arguments?

Each of the primary's calls is paired with an unused call of the target's: a call with the
same name and equal arguments counts 1, the same name with different arguments counts 0.5.
The score is the sum over max(calls on either side), so a missing or extra call costs as much
as a wrong one. Arguments are compared as parsed JSON, so `{"a":1,"b":2}` equals
`{"b": 2, "a": 1}`; arguments that are not valid JSON compare as trimmed text. Call order and
call ids are ignored (parallel tool calls arrive in any order).

Not applicable when neither answer made a tool call; 0 when only one did. Matching is by
counting (linear in the number of calls, which is the model's choice), and `detail` names at
most the first 32 calls of each side.

    [scorers.tools]
    type = "tool_calls"
    threshold = 1.0
"""

from __future__ import annotations

import json
from collections import Counter

from shadowtap.completion import ToolCall
from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict
from shadowtap.scorers.jsontext import canonical_json

SAME_NAME_CREDIT = 0.5  # right tool, wrong arguments: better than the wrong tool
MAX_LISTED = 32  # call names per side in detail


def canonical_arguments(call: ToolCall) -> str:
    try:
        return canonical_json(json.loads(call.arguments or "{}"))
    except (ValueError, RecursionError):  # invalid, or nested deeper than the parser goes
        return call.arguments.strip()


class ToolCalls(CpuScorer[ScorerOptions]):
    reads_request = False

    def score(self, pair: Pair) -> Result:
        primary, target = pair.primary.tool_calls, pair.target.tool_calls
        if not primary and not target:
            return None
        names = {
            "primary": sorted(c.name for c in primary)[:MAX_LISTED],
            "target": sorted(c.name for c in target)[:MAX_LISTED],
        }
        unused = Counter((c.name, canonical_arguments(c)) for c in target)
        # Exact matches first, so a same-name partial match never steals a call's exact twin.
        exact = 0
        partial: Counter[str] = Counter()
        for call in primary:
            key = (call.name, canonical_arguments(call))
            if unused[key] > 0:
                unused[key] -= 1
                exact += 1
            else:
                partial[call.name] += 1
        unused_names: Counter[str] = Counter()
        for (name, _), count in unused.items():
            unused_names[name] += count
        same_name = sum(min(count, unused_names[name]) for name, count in partial.items())
        credit = exact + SAME_NAME_CREDIT * same_name
        return Verdict(credit / max(len(primary), len(target)), names)
