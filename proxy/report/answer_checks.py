"""Each answer's reliability checks (`shadowtap.report.reliability.CHECKS`) in SQL, for the
report's working table (`shadowtap.report.selection`): packed two bits per check into one
integer column per side (`checks_sql`), read back one check at a time (`check_sql`).

What SQL can settle (empty, truncated, a content filter) is settled there. The rest (JSON mode,
tool calls, a possible refusal phrase) goes to `packed_check`, which DuckDB calls as the Python
function `shadowtap_check` for those answers only; a regular expression (`REFUSAL_HINT`) picks
the heads that may hold a refusal phrase: a superset, never a miss.
"""

from __future__ import annotations

import re

from shadowtap.report.reliability import (
    CHECKS,
    MAX_CHECKED_CHARS,
    PHRASES,
    REFUSAL_WINDOW,
    TRUNCATED,
    Answer,
    check,
)

# Every refusal phrase holds a word of no whitespace (its longest); an ASCII head that contains
# none of these words, case-insensitively, contains no phrase after `reliability._refuses`
# folds it (lower case, whitespace runs made one space). Only the heads that do, and the
# non-ASCII ones, go to Python for the exact check: a superset, never a miss.
_ANCHORS = sorted({max(p.split(), key=len) for p in PHRASES})
# One pass over the head: any non-ASCII character (Python folds those: to the exact check), or
# an anchor word in any case (the flag scoped, so that case folding leaves the class alone).
REFUSAL_HINT = (
    "[^\\x00-\\x7f]|(?i:"
    + "|".join(re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", a) for a in _ANCHORS)
    + ")"
    if _ANCHORS and all(_ANCHORS)
    else ""
)

PACKED = {name: 2 * i for i, name in enumerate(CHECKS)}  # check -> its two bits' shift


def check_sql(side: str, name: str) -> str:
    """SQL for one check of one side's answer: NULL (does not apply), false or true (broken)."""
    bits = f"(({side}_checks >> {PACKED[name]}) & 3)"
    return f"(CASE {bits} WHEN 1 THEN false WHEN 2 THEN true END)"


def _pack(outcome: dict[str, bool | None]) -> int:
    return sum(
        (0 if value is None else 2 if value else 1) << PACKED[name]
        for name, value in outcome.items()
    )


def packed_check(
    finish: str | None,
    blank: bool | None,
    head: str | None,
    json_text: str | None,
    calls: str | None,
    json_mode: str | None,
    schema_json: str | None,
    tools_json: str | None,
) -> int:
    """`reliability.check` of one successful answer, packed: DuckDB calls it (as a Python
    function) only for answers the SQL cannot settle (JSON mode, tool calls, a possible
    refusal phrase)."""
    answer = Answer(
        "", True, finish, bool(blank), head, json_text, calls, json_mode, schema_json, tools_json
    )
    return _pack(check(answer))


def ok_sql(side: str) -> str:
    return (
        f"({side}_error IS NULL AND {side}_status IS NOT NULL"
        f" AND {side}_status BETWEEN 200 AND 299)"
    )


def checks_sql(side: str) -> str:
    """The packed checks of one side: settled in SQL, or by `packed_check` when it must."""
    text = f"{side}_text"
    # `left(text, REFUSAL_WINDOW)`, without its copy when the text is no longer (strlen counts
    # bytes: a text of at most that many bytes has at most that many characters). Most answers
    # are shorter; the copy was ~0.3 CPU-s of every 250,000 requests' slice.
    head = (
        f"(CASE WHEN strlen({text}) <= {REFUSAL_WINDOW} THEN {text}"
        f" ELSE left({text}, {REFUSAL_WINDOW}) END)"
    )
    # `text IS NULL OR trim(text) = ''`, with trim run only on a text that starts with a space
    blank = (
        f"(CASE WHEN {text} IS NULL OR {text} = '' THEN true"
        f" WHEN left({text}, 1) <> ' ' THEN false ELSE trim({text}) = '' END)"
    )
    finish = f"{side}_finish_reason"
    calls = f"CAST({side}_tool_calls AS VARCHAR)"
    truncated = f"coalesce({finish} IN ({', '.join(repr(t) for t in sorted(TRUNCATED))}), false)"
    hint = REFUSAL_HINT.replace("'", "''")
    refusal_hint = f"regexp_matches({head}, '{hint}')" if hint else "true"
    needs = f"(json_mode IS NOT NULL OR {side}_tool_calls IS NOT NULL OR {refusal_hint})"
    json_text = (
        f"CASE WHEN json_mode IS NOT NULL AND length({text}) <= {MAX_CHECKED_CHARS} THEN {text} END"
    )
    simple = (
        f"((CASE WHEN {blank} THEN 2 ELSE 1 END) << {PACKED['empty']})"
        f" | ((CASE WHEN {truncated} THEN 2 ELSE 1 END) << {PACKED['truncated']})"
        f" | ((CASE WHEN coalesce({finish} = 'content_filter', false) THEN 2 ELSE 1 END)"
        f" << {PACKED['refused']})"
    )
    return (
        f"CASE WHEN NOT {ok_sql(side)} THEN 0"
        f" WHEN {needs} THEN shadowtap_check({finish}, {blank}, {head}, {json_text}, {calls},"
        f" json_mode, schema_json, tools_json)"
        f" ELSE {simple} END"
    )
