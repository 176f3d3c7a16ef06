"""The cap on a stored text's size (`storage.max_text_bytes`): what is cut, and how it is marked.

DuckDB keeps a string longer than about a block (256 KiB) in overflow blocks it cannot evict
before they are checkpointed, and every checkpoint pins again those of the whole row group it
rewrites: with 1 MB prompts a checkpoint under `storage.memory_limit` failed ("failed to pin
block") once the table held ~300 MB, and one that succeeded took the process past 1 GiB. Texts
of a few hundred KiB or less are stored in ordinary blocks, which the buffer pool streams and
evicts. So each free-text field is cut to `max_text_bytes` (UTF-8 bytes) after redaction (a
secret is never cut in half before it is scrubbed: a request body's strings longer than twice
the limit are first cut only at a point no secret straddles, `precut`), and marked so that no
reader mistakes it for the whole text:

- a VARCHAR column (`text`, `error`) keeps its head and ends with
  `\\n[TRUNCATED: 1048576 bytes, the first 131022 kept]`;
- `tool_calls` stays a list of calls, each call's `arguments` cut like a text;
- a JSON column (`request_body`, `detail`) becomes a JSON *string* that starts
  with `[TRUNCATED: 1048576 bytes, the first 131020 kept] ` followed by the head of the JSON
  text, so it stays valid JSON and is never read as the object it was. Replay and export
  leave out (and count) a request whose body or answer was cut (`CUT_TEXT` finds an answer).

Every cut is counted in `shadowtap_record_text_truncated_total{field}`. The check costs one
`len()` per value (a string's length in characters is stored, and a character is at most 4
UTF-8 bytes, so only a value longer than a quarter of the limit is encoded to be measured).

A cut text is made a little shorter than the limit when that lets cut texts share DuckDB's
blocks without waste (`fitted`): until a checkpoint, DuckDB keeps each long string whole in a
256 KiB overflow block, as many to a block as fit, so texts cut to exactly 128 KiB (the
default limit, a few bytes over half a block) took a block each, twice their size.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:  # rows cuts the request body with TextCap as it makes it
    from shadowtap.recorder.rows import Batch

TRUNCATION_MARK = "[TRUNCATED:"
# How a cut VARCHAR value ends (readers test for it, e.g. export leaves such answers out).
CUT_TEXT = re.compile(r"\n\[TRUNCATED: \d+ bytes, the first \d+ kept\]\Z")
# table -> its free-text columns, and whether each is a JSON column.
CAPPED: dict[str, tuple[tuple[str, bool], ...]] = {
    "exchanges": (("request_body", True),),
    "responses": (("text", False), ("error", False), ("tool_calls", True)),
    "scores": (("detail", True), ("error", False)),
}


# DuckDB's overflow blocks (its default block size), less room for their header and each
# string's: measured with DuckDB 2.0, two strings of up to 131,062 bytes share a block and two
# of 131,064 do not (`duckdb_memory()` OVERFLOW_STRINGS: 25 MB for 200 strings of 131,062
# bytes, 50 MB for 200 of 131,064); 64 bytes of room keeps a margin for a version's headers.
BLOCK_BYTES = 256 * 1024
BLOCK_ROOM = BLOCK_BYTES - 64
# A limit this little over a share of a block (1/64th of it at most) is brought down to the
# share; further over, the cut would lose more text than the packing saves.
FIT_SLACK = 64


def fitted(limit: int) -> int:
    """The size a text over `limit` bytes is cut to: `limit`, or just under it when that
    fits one more cut text into each of DuckDB's blocks (see BLOCK_ROOM). The default
    131,072 becomes 131,040: two cut texts to a block instead of one."""
    for share in (BLOCK_ROOM // 2, BLOCK_ROOM // 3, BLOCK_ROOM // 4):
        if share < limit <= share + share // FIT_SLACK:
            return share
    return limit


def _head(data: bytes, size: int) -> str:
    """The first `size` bytes of UTF-8 `data` as text, never ending inside a character."""
    return data[: max(size, 0)].decode("utf-8", "ignore")


def cut_text(value: str, limit: int) -> str:
    data = value.encode("utf-8", "surrogatepass")
    mark = f"\n{TRUNCATION_MARK} {len(data)} bytes, the first {{kept}} kept]"
    room = limit - len(mark.format(kept=limit).encode())
    head = _head(data, room)
    return head + mark.format(kept=len(head.encode("utf-8", "surrogatepass")))


def cut_json(value: str, limit: int, dropped: int = 0) -> str:
    """`value` as a JSON string holding the mark and its head; `dropped`: bytes of it already
    cut off before (`precut`), counted in the mark's total."""
    data = value.encode("utf-8", "surrogatepass")
    mark = f"{TRUNCATION_MARK} {len(data) + dropped} bytes, the first {{kept}} kept] "
    room = limit - len(mark.format(kept=limit).encode()) - 2  # the string's quotes
    while True:
        head = _head(data, room)
        kept = len(head.encode("utf-8", "surrogatepass"))
        out = orjson.dumps(mark.format(kept=kept) + head).decode()
        excess = len(out.encode()) - limit
        if excess <= 0 or room <= 0:
            return out
        room -= excess  # escaping (quotes, control characters) made it longer: cut that much


def cut_tool_calls(value: str, limit: int) -> str:
    """Each call's `arguments` cut like a text, so the column stays a list of calls; a list
    still too long (thousands of calls, long names) is cut like any JSON."""
    try:
        calls = orjson.loads(value)
    except orjson.JSONDecodeError:
        return cut_json(value, limit)
    if isinstance(calls, list) and calls and all(isinstance(c, dict) for c in calls):
        share = max(limit // len(calls) - 256, 0)  # room for each call's id, name and keys
        for call in calls:
            arguments = call.get("arguments")
            if isinstance(arguments, str) and len(arguments.encode()) > share >= 128:
                call["arguments"] = cut_text(arguments, share)
        out = orjson.dumps(calls).decode()
        if len(out.encode()) <= limit:
            return out
    return cut_json(value, limit)


def _over(value: str, limit: int) -> bool:
    return len(value) > limit // 4 and len(value.encode("utf-8", "surrogatepass")) > limit


@dataclass(slots=True)
class TextCap:
    """`storage.max_text_bytes` applied to one value as soon as it is made, and what it cut.

    The request body is the one text the writer builds anew (parsed, redacted, serialized
    again: a prompt's full size), so it is cut there, one row at a time, rather than after the
    batch's column held every row's whole text (`cap_batch` cuts the rest, which only refer
    to texts the exchanges hold anyway).

    Example: `cap = TextCap(128 * 1024); cap.json("request_body", text); cap.cut`.
    """

    limit: int
    cut: Counter[str] = field(default_factory=Counter)

    def json(self, name: str, value: str | None, dropped: int = 0) -> str | None:
        """`value` cut if it is too long, or if `dropped` bytes of it were already cut off
        before it was scrubbed (`precut`): then it is marked cut even when what is left fits."""
        if value is None or self.limit <= 0 or (not dropped and not _over(value, self.limit)):
            return value
        self.cut[name] += 1
        return cut_json(value, fitted(self.limit), dropped)


def cap_batch(batch: Batch, limit: int) -> Counter[str]:
    """Cut, in place in the batch's columns, every capped value longer than `limit` bytes;
    returns how many values were cut per field. `limit` 0: nothing is cut."""
    cut: Counter[str] = Counter()
    if limit <= 0:
        return cut
    surely_short = limit // 4  # characters: at most 4 bytes each
    size = fitted(limit)
    for table_name, columns in CAPPED.items():
        table = batch.get(table_name)
        if not table:
            continue
        for name, is_json in columns:
            values = table[name]
            if max(map(len, filter(None, values)), default=0) <= surely_short:
                continue
            cutter = CUTTERS.get(name, cut_json if is_json else cut_text)
            for i, value in enumerate(values):
                if value is not None and _over(value, limit):
                    values[i] = cutter(value, size)
                    cut[name] += 1
    return cut


CUTTERS = {"tool_calls": cut_tool_calls}
