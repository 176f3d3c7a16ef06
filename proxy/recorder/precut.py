"""Cutting a long text before it is scrubbed, at a point no secret straddles.

A stored text is cut to `storage.max_text_bytes` (`caps`), so of a 1 MB prompt only the first
128 KiB is kept; scrubbing the whole megabyte first (`shadowtap.redact`) cost the writer ~9 ms
of CPU per prompt, during which the record queue held the raw bodies, and made its CPU per
exchange grow with what a client sends. So a text longer than `GUARD` x the limit (in
characters, hence in bytes too) is first cut to a *window* of between 1x and `GUARD` x the
limit characters; only the window is scrubbed, then cut to the limit and marked as before.
Nothing after the window is ever stored, so the rule "the stored text holds no part of a
secret the whole-text scrub would have removed" needs one thing: no secret the whole-text scrub
would match starts inside the window and ends past it. The cut point P (the window is
`text[:P]`) is chosen so:

1. the character before P is a space or a newline, and the one before that is neither an ASCII
   digit nor ")";
2. no exact secret (`ExactSecrets`, any of its forms) starts before P and ends after it;
3. every `-----BEGIN` before P is followed, before P, by a whole `-----END ... PRIVATE KEY-----`
   that starts after the key's whole header (if it is one);
4. the text before P does not end with an AWS secret-key name and the separators its shape
   allows after it (`aws_secret_access_key = `).

Why no shape of `shadowtap.redact` can then straddle P (a match that does would hold the
character at P-1, a space or newline):
- `jwt`, `api_key` (every form), `aws_access_key`, `email`: their characters are all drawn
  from classes without whitespace, so no match holds P-1;
- `phone`: its only whitespace is a `[ .-]` separator, and each one follows a digit or ")"
  (rule 1 excludes both);
- `bearer_token` and `aws_secret_key`: whitespace only in `\\s+`/`\\s*` before the token or
  value, so a match holding P-1 has all of its secret part at or after P, which is dropped;
  the window keeps "Bearer " or "aws_secret_access_key = ", names, not secrets. But scrubbed
  whole, the name goes with its value, and the later passes (e-mail, phone) then see
  "[REDACTED:" after what precedes it: an address or number written against an AWS name
  (`a@b.ioaws_secret_access_key = ...`, which no `\\b` starts) matches only there, and would
  be stored from the window. Rule 4 keeps such a name out of the window. ("bearer" starts
  with `\\b`, so what precedes it ends in a character no e-mail or phone ends in.)
- `private_key`: a match starts with `-----BEGIN` and ends at the first whole END marker
  after its header (lazy), which rule 3 puts before P;
- exact secrets: rule 2, checked on every form (raw, JSON-escaped, percent-encoded). (A form
  only made by an earlier placeholder next to P, `...credential] x`, is not looked for.)
Matches wholly inside the window are found as in the whole text: their lookarounds and `\\b`
see the same characters, since P-1 is whitespace in both (and, by rule 4, the same text the
earlier passes replaced). So for a text with no secret near
P, the scrubbed window is exactly the head of the scrubbed whole text, and the stored value is
the old path's (the mark's byte count adds the dropped tail as sent, before scrubbing).

P is looked for from `GUARD` x limit down to the limit (so an unscrubbed window holds at least
the limit's bytes), then, when a token covers all that, after it, up to `REACH` x limit. A
text with no such point there (a token longer than that, or a secret or an open private key
covering the whole range) is scrubbed whole, as before: any cut inside a token could leave a
prefix too short to match its shape (`sk-` + 15 characters, an e-mail's local part, a JWT's
first part), and dropping the token would store less than before. So is a text where finding
P takes more than `MAX_MOVES` moves (thousands of `-----BEGIN`): the search stays bounded.
The writer's CPU for a long text is then bounded by the cap unless the text is one
megabyte-long token (or such a crafted text): for those it is what it was, proportional.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from shadowtap.redact import AWS_SECRET_NAME, PRIVATE_KEY_END, PRIVATE_KEY_HEADER, ExactSecrets

GUARD = 2
MAX_MOVES = 64
# What may precede a phone number's separator: a safe point's space follows none of them.
_PHONE_END = frozenset("0123456789)")
MAX_SPACES = 4096  # unsafe spaces one text's search passes over before giving up (scrubbed whole)
REACH = 8  # past GUARD x limit, a window may reach this far to end after a long token
_KEY_BEGIN = "-----BEGIN"
_KEY_HEADER = re.compile(PRIVATE_KEY_HEADER)
_KEY_END = re.compile(PRIVATE_KEY_END)
# The text before a cut point ending in an AWS secret-key name and the separators its shape
# allows after the name (rule 4), within `_NAME_REACH` characters; longer runs of separators
# there move the point back by as much.
_NAME_BEFORE = re.compile(AWS_SECRET_NAME + r"""["']?\s*(?:[:=]\s*["']?)?\Z""")
_SEPARATORS = re.compile(r"""[\s"':=]*""")
_NAME_REACH = 256
# Nesting orjson cannot write back (the body is then stored as its raw text): not walked.
_MAX_DEPTH = 255


def _after_space(text: str, low: int, point: int, budget: list[int]) -> int:
    """The largest P in [low, point] after a space or newline that follows neither a digit nor
    ")" (or starts the text), or -1; also -1 when finding it would pass over more unsafe spaces
    ("1 2 3 ...") than `budget[0]`, which it takes the ones it passes over from."""
    lowest = max(low - 1, 0)  # the space is at P-1
    space = text.rfind(" ", lowest, point)  # str.rfind: a C scan, unlike a regex
    newline = text.rfind("\n", lowest, point)
    while True:
        at = max(space, newline)
        if at < 0:
            return -1
        if at == 0 or text[at - 1] not in _PHONE_END:
            return at + 1
        if budget[0] <= 0:
            return -1
        budget[0] -= 1
        if at == space:
            space = text.rfind(" ", lowest, at)
        else:
            newline = text.rfind("\n", lowest, at)


def _first_after_space(text: str, start: int, end: int) -> int:
    """`_after_space` forwards: the smallest such P with P-1 in [start, end), or -1."""
    space = text.find(" ", start, end)
    newline = text.find("\n", start, end)
    for _ in range(MAX_SPACES):
        at = min(space, newline) if space >= 0 and newline >= 0 else max(space, newline)
        if at < 0:
            return -1
        if at == 0 or text[at - 1] not in _PHONE_END:
            return at + 1
        if at == space:
            space = text.find(" ", at + 1, end)
        else:
            newline = text.find("\n", at + 1, end)
    return -1


def _key_body(text: str, begin: int, point: int) -> int:
    """Where the END marker closing a key that starts at `begin` may start: after its header,
    whose closing dashes may start one (`-----BEGIN PRIVATE KEY-----END ...`, which the
    scrub's pattern does not take for the END), or after `-----BEGIN` when it is no key's."""
    header = _KEY_HEADER.match(text, begin, point)
    return begin + len(_KEY_BEGIN) if header is None else header.end()


def _name_before(text: str, point: int) -> int:
    """Where a point before `point` must be for rule 4, or -1 when `point` keeps it."""
    low = max(point - _NAME_REACH, 0)
    if low > 0 and _SEPARATORS.fullmatch(text, low, point):
        return low  # a long run of them: a name may be further back
    if text.find("_", low, point) < 0:  # in every name: most texts are done here
        return -1
    name = _NAME_BEFORE.search(text, low, point)
    return -1 if name is None else name.start()


def safe_point(
    text: str, low: int, high: int, secrets: ExactSecrets | None, budget: list[int] | None = None
) -> int:
    """The largest cut point P in [low, high] that no secret straddles (module docstring), or
    -1 when there is none or finding one takes more than `MAX_MOVES` moves or passing over more
    than `MAX_SPACES` unsafe spaces (`budget`: a one-item list of those left, which a caller's
    searches of one text share)."""
    budget = [MAX_SPACES] if budget is None else budget
    point = high
    begin = text.rfind(_KEY_BEGIN, 0, high)  # the last one before `point` while it ends before
    for _ in range(MAX_MOVES):
        point = _after_space(text, low, point, budget)
        if point < 0:
            return -1
        moved = point
        if begin + len(_KEY_BEGIN) > point:  # (a scan from the start each move cost ~50 us)
            begin = text.rfind(_KEY_BEGIN, 0, point)
        if begin >= 0 and _KEY_END.search(text, _key_body(text, begin, point), point) is None:
            moved = begin
        name = _name_before(text, moved)
        if name >= 0:
            moved = name
        if secrets is not None:
            start = secrets.straddling(text, moved)
            if start >= 0:
                moved = start
        if moved == point:
            return point
        point = moved
    return -1


def window(text: str, limit: int, secrets: ExactSecrets | None) -> str | None:
    """The head of `text` to scrub in its place, or None to scrub it whole (short, or no safe
    point). `limit` is the cap in UTF-8 bytes; 0 or less: None (no cap, nothing cut)."""
    if limit <= 0 or len(text) <= GUARD * limit:
        return None
    budget = [MAX_SPACES]  # for both searches: the second walks the first one's range again
    point = safe_point(text, limit, GUARD * limit, secrets, budget)
    if point < 0:  # no safe point up to GUARD x limit: a long token; the first one after it
        after = _first_after_space(text, GUARD * limit, REACH * limit)
        if after >= 0:
            point = safe_point(text, limit, after, secrets, budget)
    return None if point < 0 or point >= len(text) else text[:point]


class JsonCut:
    """Pre-cuts the long strings of a parsed JSON body, and how many bytes of serialized JSON
    it dropped (each dropped tail as orjson writes it, quotes aside).

    Example: `cut = JsonCut(131072, None); body = cut.walk(body); cut.dropped`.
    Raises TypeError where orjson would on the dropped text (a lone surrogate): the body then
    goes the way a body orjson cannot write goes, as the old path did.
    """

    __slots__ = ("dropped", "limit", "secrets")

    def __init__(self, limit: int, secrets: ExactSecrets | None) -> None:
        self.limit = limit
        self.secrets = secrets
        self.dropped = 0

    def walk(self, value: Any, depth: int = 0) -> Any:
        """`value` with each string value (keys are left whole) past the guard cut to its
        window; containers are copied only where something was cut."""
        if isinstance(value, str):
            head = window(value, self.limit, self.secrets)
            if head is None:
                return value
            self.dropped += len(orjson.dumps(value[len(head) :])) - 2
            return head
        if depth >= _MAX_DEPTH:
            return value
        # What `walk` would give back as it is (a string too short to cut, a number, a boolean,
        # null) is passed over here, not in a call: a call per value cost ~220 ns, and a 1 MB
        # body of 250,000 short strings took ~55 ms to walk, twice its parse.
        guard = GUARD * self.limit
        if isinstance(value, dict | list):
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            out: Any = None
            for key, item in pairs:
                kind = type(item)
                if kind is str:
                    if len(item) <= guard:
                        continue
                elif kind is not dict and kind is not list:
                    continue
                new = self.walk(item, depth + 1)
                if new is not item:
                    if out is None:
                        out = dict(value) if isinstance(value, dict) else list(value)
                    out[key] = new
            return value if out is None else out
        return value
