"""How much JSON the event loop may parse in one call, and a cheap way to tell beforehand.

The answer readers (`shadowtap.dialects`), the sampler and the shadow budgets all parse JSON
from clients and upstreams on the event loop, one document in one call; these bound that
call to a few milliseconds. The readers themselves live in `shadowtap.dialects`, one per API.

Example:
    if too_many_values(body):
        ...  # do not parse it on the loop
"""

from __future__ import annotations

# One JSON document is parsed in one call that holds the event loop: a few ms at most. orjson
# spends 25-45 ns per value (a megabyte of `[{},{},...]` is 30 ms and 40 MB of objects), so
# documents with more values than this are not parsed. An answer without logprobs has a few
# hundred; 50,000 is ~1,000 tokens of logprobs with 5 alternatives each.
MAX_JSON_VALUES = 50_000
# A document shorter than this cannot hold MAX_JSON_VALUES (each value takes two bytes or more
# with its separator), so only longer ones are counted.
COUNT_FROM = 2 * MAX_JSON_VALUES


def json_values_bound(data: bytes) -> int:
    """An upper bound on the values (and keys) parsing `data` as JSON would build: every value
    but the first follows a `,`, `[` or `:` (commas inside strings only make it larger).
    One pass in C, ~4 ns a byte."""
    return len(data) - len(data.translate(None, b",[:"))


def too_many_values(data: bytes, values: int | None = None) -> bool:
    """True when `data` may hold more than MAX_JSON_VALUES (`values`: a bound already known)."""
    if len(data) < COUNT_FROM:
        return False
    return (values if values is not None else json_values_bound(data)) > MAX_JSON_VALUES
