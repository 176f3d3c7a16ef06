"""Attacks on the request body's pre-cut (`recorder/precut.py`) that `test_recorder_precut.py`
does not make: a private key's header whose closing dashes start an END marker, key bodies with
safe points inside them, bearer tokens after tabs and Unicode spaces, quoted AWS secrets,
exact secrets that are not ASCII or that the client's JSON escaped (`\\/`, `\\u0041`), bodies
nested past the walk's depth, bytes that are not UTF-8; and, through the real writer and
DuckDB, answers, errors, tool arguments and scorer details, which are scrubbed whole before
they are cut. The rule: no 8-character piece of a secret is stored, the stored body is valid
JSON, and the exchange is recorded."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import ToolCall
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly
from shadowtap.recorder.caps import TRUNCATION_MARK
from shadowtap.recorder.precut import MAX_SPACES, REACH, safe_point, window
from shadowtap.redact import AWS_SECRET_NAME, ExactSecrets, redact

from tests.precut_support import (
    ASCII_FILLER,
    HIGH,
    LIMIT,
    SHRINK_KEY,
    exchange,
    json_body,
    planted,
    readable,
    stored,
)
from tests.synthetic import synthetic_exchange

PIECE = 8  # characters: a stored piece of a secret this long is a leak


def pieces(secret: str) -> set[str]:
    """Every PIECE characters of `secret`, as sent and as JSON escapes it."""
    out: set[str] = set()
    for form in {secret, orjson.dumps(secret).decode()[1:-1]}:
        out |= {form[i : i + PIECE] for i in range(len(form) - PIECE + 1)}
    return out


def shown(value: str | None, secret: str) -> list[str]:
    text = readable(value)
    return sorted(p for p in pieces(secret) if p in text)


def body_of(text: str, form: str) -> bytes:
    return json_body(text) if form == "json" else text.encode()


# Base64 lines that end in a letter, so a newline inside the key is a safe point's space
# (the older tests' key lines end in digits, which no safe point follows).
KEY_LINES = "\n".join(
    f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ{c}x" for c in "ABCDEFGHIJ"
)


@pytest.mark.parametrize("form", ["json", "raw"])
@pytest.mark.parametrize(
    "header",
    [
        "-----BEGIN PRIVATE KEY-----",
        # The header's closing dashes are an END marker's opening ones: the scrub's pattern
        # looks for the END after the header, so this key is open until the real END.
        "-----BEGIN PRIVATE KEY-----END PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY------END RSA PRIVATE KEY-----",
    ],
    ids=["plain", "end_in_header", "end_after_header"],
)
def test_a_private_key_with_safe_points_inside_is_never_cut_open(header: str, form: str) -> None:
    block = f" {header}\n{KEY_LINES}\n-----END RSA PRIVATE KEY----- "
    start = 40 + len(SHRINK_KEY)  # after the key that shrinks the head to fit the cap
    for offset in range(start, HIGH + 4, 7):
        text = planted(ASCII_FILLER, 4 * LIMIT, offset, block, shrink=True)
        new, _, _, _ = stored(exchange(body_of(text, form)))
        orjson.loads(new or "")
        assert not shown(new, KEY_LINES), (offset, shown(new, KEY_LINES)[:3])


def test_a_key_header_ending_in_an_end_marker_leaves_the_key_open() -> None:
    text = ASCII_FILLER * 30 + "-----BEGIN PRIVATE KEY-----END PRIVATE KEY-----\n"
    key_at = len(text)
    text += KEY_LINES + "\n-----END PRIVATE KEY----- " + ASCII_FILLER * 30
    point = safe_point(text, 10, key_at + 200, None)
    assert point <= text.index("-----BEGIN")


# (name, text planted, its secret part, exact credentials the request carried)
PLANTS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("bearer_tab", "Bearer\tTq9Wz8Xy7Vu6Ts5Rq4Po3", "Tq9Wz8Xy7Vu6Ts5Rq4Po3", ()),
    ("bearer_ideographic_space", "bearer\u3000Tq9Wz8Xy7Vu6Ts5Rq4Po3", "Tq9Wz8Xy7Vu6Ts5Rq4Po3", ()),
    ("bearer_nbsp", "Bearer\u00a0 \nTq9Wz8Xy7Vu6Ts5Rq4Po3", "Tq9Wz8Xy7Vu6Ts5Rq4Po3", ()),
    (
        "aws_secret_quoted",
        '"aws_secret_access_key" :  "Q1w2E3r4T5y6U7i8O9p0Q1w2E3r4T5y6U7i8O9p0"',
        "Q1w2E3r4T5y6U7i8O9p0Q1w2E3r4T5y6U7i8O9p0",
        (),
    ),
    (
        "jwt_after_name",
        "token= eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_X",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_X",
        (),
    ),
    (
        "exact_after_name",
        "api_key= tok3n-OF-any-SHAPE-77",
        "tok3n-OF-any-SHAPE-77",
        ("tok3n-OF-any-SHAPE-77",),
    ),
    (
        "exact_multibyte",
        "pässwörd 🙂 42 ünd 日本 zz",
        "pässwörd 🙂 42 ünd 日本 zz",
        ("pässwörd 🙂 42 ünd 日本 zz",),
    ),
    (
        "exact_many_spaces",
        "a b c d e f g h i j k",
        "a b c d e f g h i j k",
        ("a b c d e f g h i j k",),
    ),
    (
        "exact_percent_encoded",
        "open%20sesame%2F42%20XyZ",
        "open%20sesame%2F42%20XyZ",
        ("open sesame/42 XyZ",),
    ),
]


@pytest.mark.parametrize("form", ["json", "raw"])
@pytest.mark.parametrize(("name", "plant", "secret", "creds"), PLANTS, ids=[p[0] for p in PLANTS])
def test_more_secrets_at_the_pre_cut_point_leave_no_piece(
    name: str, plant: str, secret: str, creds: tuple[str, ...], form: str
) -> None:
    for shrink in (False, True):
        for offset in range(HIGH - len(plant) - 4, HIGH + 4):
            text = planted(ASCII_FILLER, 4 * LIMIT, offset, " " + plant + " ", shrink=shrink)
            new, _, _, _ = stored(exchange(body_of(text, form), creds))
            orjson.loads(new or "")
            assert not shown(new, secret), (name, offset, shrink, shown(new, secret))


@pytest.mark.parametrize(
    "escaped",
    [
        "tok3n\\/OF\\/any\\/SHAPE\\/77",  # PHP's json_encode escapes every "/"
        "\\u0074ok3n/OF/any/SHAPE/\\u0037\\u0037",  # any character may be a \\u escape
    ],
)
def test_a_credential_the_client_escaped_in_its_json_is_parsed_then_scrubbed(escaped: str) -> None:
    secret = "tok3n/OF/any/SHAPE/77"
    for shrink in (False, True):
        for offset in range(HIGH - len(secret) - 4, HIGH + 4):
            text = planted(ASCII_FILLER, 4 * LIMIT, offset, " " + secret + " ", shrink=shrink)
            body = json_body(text).replace(secret.encode(), escaped.encode())
            assert escaped.encode() in body
            new, _, _, _ = stored(exchange(body, ("Bearer " + secret,)))
            orjson.loads(new or "")
            assert not shown(new, secret), (offset, shrink)


def test_a_body_nested_past_the_walk_is_stored_as_text_without_the_key() -> None:
    key = "open sesame 42 XyZ qq"
    text = planted(ASCII_FILLER, 4 * LIMIT, HIGH - 6, " " + key + " ", shrink=True)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    body = body[:-1] + b', "deep": ' + ("[" * 300).encode()
    body += orjson.dumps(text) + ("]" * 300).encode() + b"}"
    new, _, cap, _ = stored(exchange(body, (key,)))
    assert new is not None and orjson.loads(new).startswith(TRUNCATION_MARK)
    assert cap.cut == {"request_body": 1}
    assert not shown(new, key)


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3", b"\xe6\x97", b"\xed\xa0\x80", b"\x00"])
def test_bytes_that_are_not_utf8_at_the_cut_cost_nothing(bad: bytes) -> None:
    key = "open sesame 42 XyZ qq"
    for offset in range(HIGH - 30, HIGH + 4, 3):
        text = planted(ASCII_FILLER, 4 * LIMIT, offset, " " + key + " ", shrink=True).encode()
        body = text[: offset + 1] + bad + text[offset + 1 :]
        new, _, cap, _ = stored(exchange(body, (key,)))
        assert new is not None and orjson.loads(new).startswith(TRUNCATION_MARK)
        assert cap.cut == {"request_body": 1}
        assert not shown(new, key), offset


class Scans(str):
    """A text that counts the scans (`find`, `rfind`) a search makes in it: the work, not the
    time, so the bound holds on any machine."""

    scans = 0

    def find(self, *args: Any) -> int:
        Scans.scans += 1
        return super().find(*args)

    def rfind(self, *args: Any) -> int:
        Scans.scans += 1
        return super().rfind(*args)


CAP = 128 * 1024  # the default cap
UNSAFE = "a " + "1 " * (MAX_SPACES - 1) + "-----BEGIN"  # one safe space, 4095 unsafe ones, a key


def test_a_crafted_text_costs_the_search_a_bounded_number_of_scans() -> None:
    # Runs of 4095 spaces after digits, each after a safe space and before an open key: every
    # unsafe space cost a scan and every key a move, so the search took ~260 ms at the default
    # cap (then the text was scrubbed whole in ~10 ms). Its unsafe spaces are one budget now.
    text = (UNSAFE * (REACH * CAP // len(UNSAFE) + 2))[: REACH * CAP]
    Scans.scans = 0
    assert window(Scans(text), CAP, None) is None  # no safe point: scrubbed whole
    assert Scans.scans <= 2 * MAX_SPACES + 1024


def test_answers_errors_tool_arguments_and_details_are_scrubbed_whole_before_the_cut(
    tmp_path: Path,
) -> None:
    """They are cut after they are scrubbed (`caps.cap_batch`): a secret at any offset around
    the cap leaves no piece in the file, and every exchange is recorded."""
    key = "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFf"
    exact = "open sesame 42 XyZ qq"
    email = "john.Q.doe.1234@example-mail.co.uk"
    made = []
    for i, offset in enumerate(range(LIMIT - 120, LIMIT + 8, 3)):
        plant = f" {key} {exact} {email} "
        text = planted(ASCII_FILLER, 2 * LIMIT, offset, plant)
        one = synthetic_exchange(i % 9)
        one.credentials = (exact,)
        for result in one.results.values():
            completion = result.completion
            completion.text = text
            completion.error = text
            completion.tool_calls = [ToolCall(name="f", arguments=text, id="c1")]
        for score in one.scores:
            score.detail = {"note": text}
        made.append(one)
    metrics = Metrics(CollectorRegistry())
    path = tmp_path / "answers.duckdb"
    recorder = Recorder(StorageConfig(path=str(path), max_text_bytes=LIMIT), metrics)
    for one in made:
        assert recorder.record(one)
    recorder.start()
    recorder.close(timeout_s=60)
    con = open_readonly(path)
    try:
        answers = con.execute(
            "SELECT text, error, CAST(tool_calls AS VARCHAR) FROM responses"
        ).fetchall()
        details = con.execute("SELECT CAST(detail AS VARCHAR) FROM scores").fetchall()
    finally:
        con.close()
    assert len(answers) == 3 * len(made) and len(details) == 4 * len(made)
    cut = {"text": 0, "error": 0, "tool_calls": 0, "detail": 0}
    for row in [*answers, *details]:
        for value in row:
            assert value is not None
            if value.startswith(("[", "{", '"')):
                orjson.loads(value)
            for secret in (key, exact, email):
                assert not [p for p in pieces(secret) if p in value], (secret, value[-200:])
    for text, error, calls in answers:
        cut["text"] += TRUNCATION_MARK in text
        cut["error"] += TRUNCATION_MARK in error
        cut["tool_calls"] += TRUNCATION_MARK in calls
    cut["detail"] = sum(TRUNCATION_MARK in d for (d,) in details)
    assert all(cut.values()), cut  # the cuts were made, not skipped


@pytest.mark.parametrize("form", ["json", "raw"])
@pytest.mark.parametrize(
    ("personal", "name"),
    [
        ("john.doe1234@example.io", "aws_secret_access_key = "),
        ("+1 415 555 0100", "AWS_SECRET_KEY: "),
        ("(415) 555-0100", 'secret_access_key"  =  "'),
        # U+017F, the long s: to `re` the name matches case-insensitively
        ("a.b@c.io", "aws_\u017fecret_key =\n  "),
    ],
    ids=["email", "phone", "phone_quoted", "email_long_s"],
)
def test_personal_data_against_an_aws_secret_name_cut_before_its_value_is_scrubbed(
    personal: str, name: str, form: str
) -> None:
    # The name has no \b, so the whole text's scrub replaces "name = value" and the e-mail or
    # phone pass then sees "[REDACTED:..." right after the address or number: it matches.
    # A window ending inside the name's separators keeps the name, and "...ioaws_secret" or
    # "...0100AWS_SECRET" matches no e-mail or phone.
    value = "Q1w2E3r4T5y6U7i8O9p0Q1w2E3r4T5y6U7i8O9p0"
    plant = f" {personal}{name}{value} "
    cases = 0
    for shrink in (False, True):
        for offset in range(HIGH - len(plant), HIGH + 4):
            text = planted(ASCII_FILLER, 4 * LIMIT, offset, plant, shrink=shrink)
            new, old, _, _ = stored(exchange(body_of(text, form)))
            assert personal not in readable(old)  # scrubbed whole, it is found
            cases += personal in text[:HIGH]
            assert not shown(new, personal), (offset, shrink, shown(new, personal))
            assert not shown(new, value)
    assert cases


# Pieces that make and break shapes, for texts made at random: separators, digits, names,
# markers, parts of keys, addresses and numbers, exact secrets and their parts.
VOCABULARY = [
    *(" ", " ", " ", "\n", "\t", "1", "42", ")", "(415) ", "555-0100", "+1 ", "0100", "x"),
    *("word", "lorem", ".", "-", "@", "a@b.io", "john@example.com", "+44 20 ", "7946 0958"),
    *("-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN "),
    *("-----END PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "-----END ", "-----"),
    *("PRIVATE KEY", "Bearer", "bearer", "Bearer ", "sk-", "sk-proj-Q1w2E3r4T5y6U7i8O9p0"),
    *(
        "Q1w2E3r4",
        "eyJhbGciOiJIUzI1NiJ9",
        ".eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        ".dozjgNryP4J3jVmNHl0w5N",
    ),
    *("AKIA", "Q7W8E9R0T1Y2U3I4", "aws_secret_access_key", "AWS_SECRET_KEY", "secret_access_key"),
    *(" = ", ":", ": ", "=", '"', "'", "\u017f", "Q1w2E3r4T5y6U7i8O9p0Q1w2E3r4T5y6U7i8O9p0"),
    *("tok3n-OF-any-SHAPE-77", "open sesame", " 42 XyZ qq", "ab", "cd", "k3y", "a1 b2", " c3 d4"),
    *("日本", "🙂", "é"),
]
CREDENTIALS = [
    "Bearer tok3n-OF-any-SHAPE-77",
    "open sesame 42 XyZ qq",
    "ab cd",
    "k3y k3y",
    "a1 b2 c3",
]
# What the window's scrub may end in past where it parts from the whole text's: names whose
# secret is past the cut, whitespace, placeholders (the window matched more than the whole).
ALLOWED_TAIL = re.compile(
    rf"""(?:{AWS_SECRET_NAME}["']?\s*(?:[:=]\s*["']?)?|(?i:bearer)\s+|\[REDACTED:\w+\]|\s)*"""
)


@pytest.mark.parametrize("seed", range(4))
def test_a_scrubbed_window_is_the_head_of_the_scrubbed_whole_text(seed: int) -> None:
    """On texts made at random of the pieces above: what scrubbing the window stores is what
    scrubbing the whole text stores, up to where the window's has only names whose secret is
    past the cut ("Bearer ", "aws_secret_key = "), whitespace, or placeholders."""
    rng = random.Random(seed)
    limit = 64
    windows = 0
    for _ in range(1500):
        size = rng.randint(2 * limit + 1, 12 * limit)
        parts: list[str] = []
        while sum(map(len, parts)) < size:
            parts.append(rng.choice(VOCABULARY))
        text = "".join(parts)
        secrets = ExactSecrets(rng.sample(CREDENTIALS, rng.randint(0, 2))) or None
        pii = rng.random() < 0.7
        head = window(text, limit, secrets)
        if head is None:
            continue
        windows += 1
        part = redact(head, pii=pii, secrets=secrets)
        whole = redact(text, pii=pii, secrets=secrets)
        apart = next((i for i, (a, b) in enumerate(zip(part, whole, strict=False)) if a != b), None)
        tail = part[min(len(part), len(whole)) if apart is None else apart :]
        assert ALLOWED_TAIL.fullmatch(tail), (text, secrets, pii, len(head), tail)
    assert windows > 500


@pytest.mark.parametrize("limit", [0, LIMIT], ids=["whole", "cut"])
@pytest.mark.parametrize(
    "escaped",
    [
        "tok3n\\/OF\\/any\\/SHAPE\\/77",
        "\\u0074ok3n/OF/any/SHAPE/\\u0037\\u0037",
        "tok3n\\u002fOF\\u002FANY/SHAPE/77".replace("ANY", "any"),
        "\\u0074\\u006f\\u006b\\u0033\\u006e\\/OF/any/SHAPE/77",
    ],
)
def test_a_credential_escaped_in_a_body_nested_past_orjsons_limit_is_scrubbed(
    escaped: str, limit: int
) -> None:
    # orjson reads nesting to 1024 (such a request is sampled) but writes it to 255 only: the
    # body is then stored as its text, where the client's JSON escapes hid its own key.
    secret = "tok3n/OF/any/SHAPE/77"
    for shift in range(-len(secret) - 3, 4) if limit else [0]:
        text = planted(ASCII_FILLER, 4 * LIMIT, HIGH + shift, f" {escaped} ", shrink=True)
        deep = b"[" * 300 + b"]" * 300
        body = json_body(text)[:-1] + b', "deep": ' + deep + b"}"
        body = body.replace(escaped.replace("\\", "\\\\").encode(), escaped.encode())
        assert escaped.encode() in body and orjson.loads(body)["deep"]
        new, _, _, _ = stored(exchange(body, ("Bearer " + secret,)), limit=limit)
        assert new is not None
        orjson.loads(new)
        stored_text = readable(new)
        assert "[REDACTED:credential]" in stored_text or limit
        assert not [p for p in pieces(secret) | pieces(escaped) if p in stored_text], shift
