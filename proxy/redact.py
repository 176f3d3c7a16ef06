"""Scrubbing secrets and personal data out of what shadowtap stores and logs.

Two levels, chosen by `storage.bodies`:

* credentials (API-key shapes, bearer tokens, AWS keys, JWTs, private keys) are replaced in
  every mode, "full" included: credentials never reach storage (DESIGN principle 4), and an
  upstream's error message often echoes the key it rejected.
* personal data (e-mail addresses, phone numbers) is replaced in "redacted" (the default) and
  "none" (where only error messages and paths carry free text).

Example: `redact("key sk-abcdefghijklmnop1234 for a@b.io", pii=True)`
-> `"key [REDACTED:api_key] for [REDACTED:email]"`.

Shapes cannot know every key (`Bearer sk-CANARY-123456` is too short for the api_key shape,
and private gateways issue keys of any form), so the exact values a request carried
(`Exchange.credentials`) are replaced too, before the shapes run:
`redact(text, pii=False, secrets=ExactSecrets(["Bearer tok3n-of-any-shape"]))`.

The writer thread calls this on every stored string, so it is on the benchmark's path: cheap
substring checks decide whether the (slow) patterns need to run at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

# A PEM private key: its header, then everything up to the first END marker after the header
# (the recorder's pre-cut, `recorder/precut.py`, looks for both to know whether a key is open).
PRIVATE_KEY_HEADER = r"-----BEGIN [A-Z ]*PRIVATE KEY-----"
PRIVATE_KEY_END = r"-----END [A-Z ]*PRIVATE KEY-----"
PRIVATE_KEY = rf"{PRIVATE_KEY_HEADER}[\s\S]*?{PRIVATE_KEY_END}"
# The names an AWS secret key's value follows (`aws_secret_access_key = ...`); no \b before them.
AWS_SECRET_NAME = r"(?i:aws_secret_access_key|aws_secret_key|secret_access_key)"
# Ordered: the first alternative that matches at a position wins, so the specific shapes
# (a JWT, a bearer header) come before the generic ones they contain.
_CREDENTIALS: tuple[tuple[str, str], ...] = (
    ("private_key", PRIVATE_KEY),
    ("bearer_token", r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # OpenAI / Anthropic (sk-, sk-proj-, sk-ant-), Stripe, Google, GitHub, Slack, Hugging Face.
    ("api_key", r"\bsk-[A-Za-z0-9_-]{16,}"),
    ("api_key", r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("api_key", r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
    ("api_key", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ("api_key", r"\bhf_[A-Za-z0-9]{30,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("aws_secret_key", rf"{AWS_SECRET_NAME}[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{{40}}"),
)
_PII: tuple[tuple[str, str], ...] = (
    ("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    # International or North-American style numbers with separators: +1 415 555 0100,
    # (415) 555-0100, 415-555-0100, +44 20 7946 0958. Bare digit runs (ids, amounts) are left.
    (
        "phone",
        # ASCII digits only ([0-9], not the Unicode \d), like the prefilter below.
        r"(?<![\w+])(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?|[0-9]{2,4}[ .-])"
        r"[0-9]{3,4}[ .-]?[0-9]{3,4}(?![\w])",
    ),
)


# Prefilter: most stored strings hold no secret, and `re` scans the patterns above slowly (an
# alternation gives it no literal prefix to search by; even a one-regex prefilter costs ~3 us
# per 90-character string). So each string is folded once and tested with plain substring
# checks (~40 ns each), and a pattern only runs when one of its fragments is there. Every
# fragment is a necessary condition of its patterns, so a false trigger only costs time:
# - every credential shape contains "bearer", "eyj", "aiza", "akia", "asia", "sk-", "xox"
#   (xox?-...), "private key" (-----BEGIN...), "secret_" (each AWS secret-key name),
#   "k_live_", "k_test_", "hf_" or "gh?_";
# - every phone shape holds two groups of 3 ASCII digits with at most one separator between
#   (the fold maps each digit to "0"), so ordinary numbers ("Question 1234", "2024-01-15")
#   pass; e-mails need an "@".
# The fold: ASCII upper case to lower case, ASCII digits to "0", any other character to a
# non-ASCII one (UTF-8 bytes read as Latin-1), so it never forms part of a fragment.
_FOLD = bytes(range(256)).translate(
    bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789", b"abcdefghijklmnopqrstuvwxyz000000000")
)
# ... and before it, the non-ASCII letters that `re`'s case-insensitive matching equates with
# ASCII ones (the bearer and AWS secret-key names match case-insensitively, so to `re`
# "aws_\u017fecret_key" is one). tests/test_recorder_privacy.py checks this is all of them.
_CASE_FOLDS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})
_SHORTEST = 6  # no shape is shorter than an e-mail like "a@b.io"


def _compile(patterns: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], list[str]]:
    groups = "|".join(f"(?P<g{i}>{pattern})" for i, (_, pattern) in enumerate(patterns))
    return re.compile(groups), [kind for kind, _ in patterns]


_CREDENTIAL_RE, _CREDENTIAL_KINDS = _compile(_CREDENTIALS)
_EMAIL_RE, _EMAIL_KINDS = _compile(_PII[:1])
_PHONE_RE, _PHONE_KINDS = _compile(_PII[1:])


def _substitute(pattern: re.Pattern[str], kinds: list[str], text: str) -> str:
    def placeholder(match: re.Match[str]) -> str:
        index = int(match.lastgroup[1:]) if match.lastgroup else 0
        return f"[REDACTED:{kinds[index]}]"

    return pattern.sub(placeholder, text)


def _fold(text: str) -> str:
    if not text.isascii():  # a flag on the string: free
        text = text.translate(_CASE_FOLDS)
    # surrogatepass: a lone surrogate (json.loads makes them) must not raise here.
    return text.encode("utf-8", "surrogatepass").translate(_FOLD).decode("latin-1")


def _has_credential_fragment(f: str) -> bool:
    # An `or` chain is the fastest way to run a dozen substring checks in CPython; the "-" and
    # "_" checks skip the fragments that hold one.
    return (
        "bearer" in f
        or "eyj" in f
        or "aiza" in f
        or "akia" in f
        or "asia" in f
        or ("-" in f and ("sk-" in f or "xox" in f or "private key" in f))
        or (
            "_" in f
            and (
                "secret_" in f
                or "k_live_" in f
                or "k_test_" in f
                or "hf_" in f
                or "ghp_" in f
                or "gho_" in f
                or "ghu_" in f
                or "ghs_" in f
                or "ghr_" in f
            )
        )
    )


def _has_digit_run(f: str) -> bool:
    return "000" in f and ("000000" in f or "000 000" in f or "000-000" in f or "000.000" in f)


def may_hold_secrets(text: str, *, pii: bool) -> bool:
    """False when `redact` would certainly leave `text` unchanged (a cheap necessary test).

    Also sound on serialized JSON: escaping only touches quotes, backslashes and control
    characters, none of which any fragment contains.
    """
    if len(text) < _SHORTEST:
        return False
    folded = _fold(text)
    if _has_credential_fragment(folded):
        return True
    return pii and ("@" in folded or _has_digit_run(folded))


CREDENTIAL_PLACEHOLDER = "[REDACTED:credential]"
# Shorter values are not scrubbed: no provider issues keys that short, and the handler skips
# them too (shadowtap.headers). A text the placeholders would more than double (a client's
# `x-api-key: abcd` and a body of "abcdabcd...") is replaced whole instead, so scrubbing can
# never inflate what the writer holds.
MIN_SECRET_CHARS = 4
_MAX_GROWTH = 2
_MINIMAL_FORMS = 64  # the most forms whose minimal ones are looked for (`ExactSecrets`)
# Characters that JSON escaping and percent-encoding leave as they are.
_PLAIN = re.compile(r"[A-Za-z0-9._~-]*\Z").match


class ExactSecrets:
    """Exact credential values to scrub, in every form they may take in stored text.

    Each value is scrubbed as given and, for an auth scheme (`Bearer x`, `Basic x`), without
    its scheme word; each of those also JSON-escaped and percent-encoded (a query value may
    come back quoted in a URL or an error message). Longest forms are replaced first, so
    `Bearer x` leaves no `Bearer ` behind. Values under `MIN_SECRET_CHARS` are skipped.

    Example: `ExactSecrets(["Bearer tok-1234"]).scrub("bad key tok-1234")`
    -> `"bad key [REDACTED:credential]"`.
    """

    __slots__ = ("_forms", "_probes")

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in values:
            if not isinstance(value, str):
                continue
            for core in _cores(value):
                if len(core) < MIN_SECRET_CHARS:
                    continue
                forms.add(core)
                if not _PLAIN(core):  # usual keys read the same in every encoding
                    forms.add(_json_escaped(core))
                    # Also with "/" left as it is: `quote`'s default, yarl's (aiohttp's) in a query.
                    for encoded in (
                        quote(core, safe=""),
                        quote_plus(core, safe=""),
                        quote(core, safe="/"),
                        quote_plus(core, safe="/"),
                    ):
                        forms.add(encoded)
                        forms.add(_LOWER_HEX.sub(_lowered, encoded))  # `%2f`, as some encode
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        # A form that contains another form can only occur where that one does: checking the
        # minimal ones is enough to know a text holds none (usually one check: the token).
        # Finding them takes time square in their number: past a few dozen, every form is one.
        self._probes = (
            tuple(f for f in forms if not any(o != f and o in f for o in forms))
            if len(forms) <= _MINIMAL_FORMS
            else self._forms
        )

    def __bool__(self) -> bool:
        return bool(self._forms)

    def found_in(self, text: str) -> bool:
        """A cheap necessary test: False when `scrub` would leave `text` unchanged. Also sound
        on serialized JSON, since the JSON-escaped forms are among the forms."""
        # A loop: any() over a generator costs twice as much on the writer's hot path.
        for probe in self._probes:  # noqa: SIM110
            if probe in text:
                return True
        return False

    def straddling(self, text: str, point: int) -> int:
        """Where the earliest form that starts before `point` and ends after it starts in
        `text`, or -1: cutting there would leave part of that secret unmatched in the head."""
        first = -1
        for form in self._forms:
            size = len(form)
            # Every occurrence inside this slice starts before `point` and ends after it.
            start = text.find(form, max(point - size + 1, 0), point + size - 1)
            if start >= 0 and (first < 0 or start < first):
                first = start
        return first

    def scrub(self, text: str) -> str:
        for probe in self._probes:
            if probe in text:
                break
        else:
            return text
        limit = _MAX_GROWTH * len(text) + len(CREDENTIAL_PLACEHOLDER)
        for form in self._forms:
            if form in text:
                text = text.replace(form, CREDENTIAL_PLACEHOLDER)
                if len(text) > limit:
                    return CREDENTIAL_PLACEHOLDER
        return text


_LOWER_HEX = re.compile(r"%[0-9A-F]{2}")


def _lowered(match: re.Match[str]) -> str:
    return match.group().lower()


def _json_escaped(text: str) -> str:
    try:
        return orjson.dumps(text).decode()[1:-1]
    except TypeError:  # a lone surrogate: orjson cannot write it, so it is never stored so
        return text


def _cores(value: str) -> Iterable[str]:
    value = value.strip()
    yield value
    scheme, space, rest = value.partition(" ")
    if space and scheme.isascii() and scheme.isalpha():  # "Bearer x", "Basic x", "Token x"
        yield rest.strip()


def redact(text: str, *, pii: bool, secrets: ExactSecrets | None = None) -> str:
    """Replace the exact `secrets`, then credential shapes (and personal data when `pii`),
    with `[REDACTED:<kind>]`."""
    if secrets is not None:
        text = secrets.scrub(text)
    if len(text) < _SHORTEST:
        return text
    folded = _fold(text)
    if _has_credential_fragment(folded):
        text = _substitute(_CREDENTIAL_RE, _CREDENTIAL_KINDS, text)
    if pii:
        # E-mails first: an address may hold digits that would otherwise look like a phone.
        # (A placeholder holds no "@" or digit, so the fragments found in the original text
        # are still a necessary condition after a substitution.)
        if "@" in folded:
            text = _substitute(_EMAIL_RE, _EMAIL_KINDS, text)
        if _has_digit_run(folded):
            text = _substitute(_PHONE_RE, _PHONE_KINDS, text)
    return text


def redact_json_text(value: Any, *, pii: bool, secrets: ExactSecrets | None = None) -> str:
    """`value` serialized as JSON with `redact` applied to every string in it.

    Raises TypeError where orjson does: a lone surrogate, an integer past 64 bits, nesting
    deeper than 255. Serialized first, and walked only when the text may hold a secret: most
    bodies do not.
    The walk is over the parsed text, not over `value`: orjson also serializes tuples,
    dataclasses and (through `default=str`) any object, whose strings `redact_json` would not
    see, and the parsed text holds plain JSON values only.
    """
    text = orjson.dumps(value, default=str).decode()
    if not may_hold_secrets(text, pii=pii) and (secrets is None or not secrets.found_in(text)):
        return text
    return orjson.dumps(redact_json(orjson.loads(text), pii=pii, secrets=secrets)).decode()


def redact_json(value: Any, *, pii: bool, secrets: ExactSecrets | None = None) -> Any:
    """`redact` applied to every string in a JSON value, keys included."""
    if isinstance(value, str):
        return redact(value, pii=pii, secrets=secrets)
    if isinstance(value, dict):
        return {
            redact(k, pii=pii, secrets=secrets): redact_json(v, pii=pii, secrets=secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_json(v, pii=pii, secrets=secrets) for v in value]
    return value
