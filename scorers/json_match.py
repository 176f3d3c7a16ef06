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

`detail.differing` names up to 10 differing paths (the first ones in document order, sorted).
Both documents are walked side by side, so time is linear in their size and memory in their
depth: no per-field path string is built (a long key over many fields would make those
quadratic in the answer's size).

    [scorers.fields]
    type = "json_match"
    ignore_keys = ["id", "meta.created_at"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shadowtap.scorers.base import CpuScorer, Pair, Result, ScorerOptions, Verdict
from shadowtap.scorers.jsontext import parse_json_answer

MAX_LISTED = 10  # differing paths named in detail; enough to debug, bounded in storage
MAX_PATH_CHARS = 200
_MISSING = object()  # a path present on one side only
_END = object()  # marks a complete dotted ignore path in the ignore trie

# A path as a linked list (parent, step): O(1) per node, rendered only when listed.
Path = tuple[Any, str | int] | None


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


def _children(node: Any) -> list[tuple[str | int, Any]] | None:
    """A non-empty object's or array's (step, child) pairs; None for a leaf."""
    if isinstance(node, dict) and node:
        return list(node.items())
    if isinstance(node, list) and node:
        return list(enumerate(node))
    return None


def render(path: Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, step = path
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return ("$" + "".join(reversed(parts)))[:MAX_PATH_CHARS]


@dataclass
class Tally:
    fields: int = 0
    agreeing: int = 0
    differing: list[Path] = field(default_factory=list)

    def count(self, path: Path, agree: bool) -> None:
        self.fields += 1
        if agree:
            self.agreeing += 1
        elif len(self.differing) < MAX_LISTED:
            self.differing.append(path)


class JsonMatch(CpuScorer[JsonMatchOptions]):
    Options = JsonMatchOptions
    reads_request = False

    def __init__(self, name: str, options: JsonMatchOptions) -> None:
        super().__init__(name, options)
        self._names = frozenset(options.ignore_keys)  # a bare name is ignored at any depth
        # Dotted paths as a trie, walked along with the documents: O(1) per node.
        self._trie: dict[Any, Any] = {}
        for key in options.ignore_keys:
            node = self._trie
            for part in key.split("."):
                node = node.setdefault(part, {})
            node[_END] = True

    def compare(self, a: Any, b: Any) -> Tally:
        """Leaf fields over the union of both documents, and how many agree."""
        tally = Tally()
        # (path, ignore-trie node, primary's node, target's node); _MISSING on a lone side.
        stack: list[tuple[Path, dict[Any, Any] | None, Any, Any]] = [(None, self._trie, a, b)]
        while stack:
            path, trie, left, right = stack.pop()
            lefts = None if left is _MISSING else _children(left)
            rights = None if right is _MISSING else _children(right)
            if lefts is None and rights is None:  # a leaf on each side, or on the one side
                both = left is not _MISSING and right is not _MISSING
                tally.count(path, both and _leaf(left) == _leaf(right))
                continue
            if lefts is None and left is not _MISSING:  # a leaf facing a container
                tally.count(path, False)
            if rights is None and right is not _MISSING:
                tally.count(path, False)
            lookup = dict(rights or ())
            pending = [(step, child, lookup.pop(step, _MISSING)) for step, child in lefts or ()]
            pending += [(step, _MISSING, child) for step, child in lookup.items()]
            for step, left_child, right_child in reversed(pending):  # popped in document order
                child_trie = trie
                if isinstance(step, str):
                    if step in self._names:
                        continue
                    child_trie = trie.get(step) if trie is not None else None
                    if child_trie is not None and _END in child_trie:
                        continue
                stack.append(((path, step), child_trie, left_child, right_child))
        return tally

    def score(self, pair: Pair) -> Result:
        try:
            primary = parse_json_answer(pair.primary.text)
        except ValueError:
            return Verdict(None, {"reason": "primary is not JSON"})
        except RecursionError:
            return Verdict(None, {"reason": "primary nested too deeply to parse"})
        try:
            target = parse_json_answer(pair.target.text)
        except ValueError:
            return Verdict(0.0, {"reason": "target is not JSON"})
        except RecursionError:
            return Verdict(None, {"reason": "target nested too deeply to parse"})
        tally = self.compare(primary, target)
        if not tally.fields:  # every field ignored
            return Verdict(None, {"reason": "no fields left after ignore_keys"})
        return Verdict(
            tally.agreeing / tally.fields,
            {
                "fields": tally.fields,
                "agreeing": tally.agreeing,
                "differing": sorted(render(path) for path in tally.differing),
            },
        )
