"""A request body's long strings are cut before they are scrubbed (`recorder/precut.py`), at a
point no secret straddles. Attacked here: every credential shape, e-mail, phone, exact secret
(with spaces, JSON-escaped) and private-key block planted at every offset around the pre-cut
point and the final cut, in a JSON body's message and in a raw text body, in ASCII and in
multi-byte text. What is stored never holds a fragment of the secret that scrubbing the whole
text (the old path, `TextCap.json` over a body scrubbed whole) would not have stored; with no
secret near the cut it is the old path's value exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly
from shadowtap.recorder.caps import TRUNCATION_MARK
from shadowtap.recorder.precut import GUARD, REACH, safe_point, window

from tests.precut_support import (
    ASCII_FILLER,
    HIGH,
    LIMIT,
    WIDE_FILLER,
    exchange,
    json_body,
    planted,
    readable,
    stored,
)

FRAGMENT = 5  # characters: a stored piece of a secret this long is a leak

# (name, text planted, the secret part of it, exact credentials the request carried)
PLANTS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("openai", "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFf", "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFf", ()),
    ("stripe", "sk_live_Z9x8C7v6B5n4M3q2W1e0R9t8", "sk_live_Z9x8C7v6B5n4M3q2W1e0R9t8", ()),
    (
        "google",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        (),
    ),
    (
        "github",
        "ghp_R2d2C3poL0k1H2a3N4s5O6l7O8b9I0w1A2n3",
        "ghp_R2d2C3poL0k1H2a3N4s5O6l7O8b9I0w1A2n3",
        (),
    ),
    ("slack", "xoxb-5550001112-Q7w8E9r0T1y2", "xoxb-5550001112-Q7w8E9r0T1y2", ()),
    (
        "huggingface",
        "hf_Q1W2E3R4T5Y6U7I8O9P0A1S2D3F4G5H6",
        "hf_Q1W2E3R4T5Y6U7I8O9P0A1S2D3F4G5H6",
        (),
    ),
    ("aws_access", "AKIAQ7W8E9R0T1Y2U3I4", "AKIAQ7W8E9R0T1Y2U3I4", ()),
    (
        "aws_secret",
        "aws_secret_access_key = Q1w2E3r4T5y6U7i8O9p0Q1w2E3r4T5y6U7i8O9p0",
        "Q1w2E3r4T5y6U7i8O9p0Q1w2E3r4T5y6U7i8O9p0",
        (),
    ),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP",
        (),
    ),
    ("bearer", "Bearer Tq9Wz8Xy7Vu6Ts5Rq4Po3", "Tq9Wz8Xy7Vu6Ts5Rq4Po3", ()),
    ("bearer_spaces", "bearer  \n Tq9Wz8Xy7Vu6Ts5Rq4Po3", "Tq9Wz8Xy7Vu6Ts5Rq4Po3", ()),
    ("email", "john.Q.doe.1234@example-mail.co.uk", "john.Q.doe.1234@example-mail.co.uk", ()),
    ("phone_us", "+1 415 555 0100", "+1 415 555 0100", ()),
    ("phone_paren", "(415) 555-0100", "(415) 555-0100", ()),
    ("phone_uk", "+44 20 7946 0958", "+44 20 7946 0958", ()),
    (
        "exact_plain",
        "tok3n-OF-any-SHAPE-77",
        "tok3n-OF-any-SHAPE-77",
        ("Bearer tok3n-OF-any-SHAPE-77",),
    ),
    ("exact_spaces", "open sesame 42 XyZ qq", "open sesame 42 XyZ qq", ("open sesame 42 XyZ qq",)),
    ("exact_escaped", 'pa"ss\\wo\nrd 99 QxZ', 'pa"ss\\wo\nrd 99 QxZ', ('pa"ss\\wo\nrd 99 QxZ',)),
]
KEY_BODY = "\n".join(
    f"MIIB{i:02d}QkJH{i:02d}ZxWv+/AbCdEfGhIjKlMnOpQrStUvWxYz0123" for i in range(12)
)
PRIVATE_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----"


def fragments(secret: str) -> Iterator[str]:
    """Every FRAGMENT characters of `secret`, as sent and as JSON escapes it."""
    for form in {secret, orjson.dumps(secret).decode()[1:-1]}:
        for i in range(len(form) - FRAGMENT + 1):
            yield form[i : i + FRAGMENT]


def leaked(new: str | None, old: str | None, secret: str) -> list[str]:
    """Fragments of `secret` stored now that the old path did not store."""
    new_text, old_text = readable(new), readable(old)
    return [f for f in fragments(secret) if f in new_text and f not in old_text]


def offsets(plant: str, step: int = 1) -> Iterator[int]:
    """Every offset where the plant straddles, or nearly, the first place the pre-cut point is
    looked for, and the final cut."""
    yield from range(max(HIGH - len(plant) - 6, 0), HIGH + 6, step)
    yield from range(LIMIT - 120 - len(plant), LIMIT + 6, step)


CASES = [(name, plant, secret, creds) for name, plant, secret, creds in PLANTS] + [
    ("private_key", PRIVATE_KEY, KEY_BODY, ())
]


@pytest.mark.parametrize("filler", [ASCII_FILLER, WIDE_FILLER], ids=["ascii", "multibyte"])
@pytest.mark.parametrize("form", ["json", "raw"])
@pytest.mark.parametrize(("name", "plant", "secret", "creds"), CASES, ids=[c[0] for c in CASES])
def test_no_secret_straddling_the_cuts_leaves_a_fragment(
    name: str, plant: str, secret: str, creds: tuple[str, ...], form: str, filler: str
) -> None:
    step = 5 if name == "private_key" else 1
    around_high = range(max(HIGH - len(plant) - 6, 0), HIGH + 6, step)
    for offset, shrink in [(o, False) for o in offsets(plant, step)] + [
        (o, True) for o in around_high
    ]:
        text = planted(filler, 4 * LIMIT, offset, plant, shrink=shrink)
        body = json_body(text) if form == "json" else text.encode()
        new, old, new_cap, _ = stored(exchange(body, creds))
        assert new is not None and new.startswith(f'"{TRUNCATION_MARK}'), (name, offset)
        assert new_cap.cut["request_body"] == 1
        assert len(new.encode()) <= LIMIT
        assert not leaked(new, old, secret), (name, form, offset, shrink, leaked(new, old, secret))


def test_an_escaped_exact_secret_in_a_raw_body_is_not_left_in_part() -> None:
    # A raw (not JSON) body that holds the JSON-escaped form of the client's credential.
    secret = 'pa"ss\\wo\nrd 99 QxZ'
    escaped = orjson.dumps(secret).decode()[1:-1]
    for offset in offsets(escaped):
        for shrink in (False, True):
            text = planted(ASCII_FILLER, 4 * LIMIT, offset, escaped, shrink=shrink)
            new, old, _, _ = stored(exchange(text.encode(), (secret,)))
            assert not leaked(new, old, escaped), offset


@pytest.mark.parametrize("filler", [ASCII_FILLER, WIDE_FILLER, "a\n", "x 1 ", "日本 "])
@pytest.mark.parametrize("form", ["json", "raw"])
@pytest.mark.parametrize("size", [2 * LIMIT + 1, 3 * LIMIT, 40 * LIMIT])
def test_with_no_secret_near_the_cut_the_stored_body_is_the_old_one(
    filler: str, form: str, size: int
) -> None:
    text = (filler * (size // len(filler) + 1))[:size]
    body = json_body(text) if form == "json" else text.encode()
    new, old, new_cap, old_cap = stored(exchange(body))
    assert new == old
    assert new_cap.cut == old_cap.cut == {"request_body": 1}


def test_secrets_far_from_the_cut_are_scrubbed_and_the_head_is_the_old_one() -> None:
    # Secrets well inside the head: scrubbed in the window as in the whole text.
    key = "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFf"
    text = "hello " + key + " write to a@b.io or +1 415 555 0100 " + ASCII_FILLER * 200
    new, old, _, _ = stored(exchange(json_body(text), ("open sesame 42",)))
    assert new is not None and old is not None
    assert "[REDACTED:api_key]" in new and "[REDACTED:email]" in new and key not in new
    new_head = orjson.loads(new).split(" kept] ", 1)[1]
    old_head = orjson.loads(old).split(" kept] ", 1)[1]
    assert new_head == old_head


def test_a_body_of_one_token_without_whitespace_is_scrubbed_whole() -> None:
    # No safe point: any cut could leave a prefix too short to match its shape. One megabyte
    # of one token with an e-mail whose local part is the whole token.
    token = "Q" * (1024 * 1024) + "@example.com"
    for body in (json_body(token), token.encode()):
        new, old, new_cap, old_cap = stored(exchange(body))
        assert new == old and "[REDACTED:email]" in (new or "")
        assert new_cap.cut == old_cap.cut
    assert window(token, LIMIT, None) is None
    token = "Q" * (1024 * 1024)
    for body in (json_body(token), token.encode()):
        new, old, new_cap, old_cap = stored(exchange(body))
        assert new == old and new_cap.cut == old_cap.cut == {"request_body": 1}


def test_thousands_of_short_strings_are_left_to_the_old_path() -> None:
    body = orjson.dumps({"model": "m", "messages": [{"content": f"m{i} "} for i in range(5000)]})
    new, old, new_cap, old_cap = stored(exchange(body))
    assert new == old and new_cap.cut == old_cap.cut


def test_one_huge_key_is_left_whole_to_the_old_path() -> None:
    key = ASCII_FILLER * 100 + "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFf"
    new, old, _, _ = stored(exchange(orjson.dumps({"model": "m", key: "v"})))
    assert new == old and "Q1w2E3r4" not in (new or "")


def test_many_long_strings_in_one_body_are_each_cut_and_counted_once() -> None:
    secret = "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFf"
    texts = [planted(ASCII_FILLER, 5 * LIMIT, HIGH - 10 + i, secret) for i in range(20)]
    body = orjson.dumps({"model": "m", "messages": [{"content": t} for t in texts]})
    new, old, new_cap, _ = stored(exchange(body))
    assert new_cap.cut == {"request_body": 1}
    assert not leaked(new, old, secret)
    assert len((new or "").encode()) <= LIMIT


def test_a_huge_private_key_that_shrinks_to_its_placeholder_is_still_marked_cut() -> None:
    # The pre-cut drops the text after the key; scrubbed, what is left fits under the cap,
    # but the body is not whole, so it must still read as cut and be counted.
    block = "-----BEGIN PRIVATE KEY-----\n" + ("QUJD" * 16 + "\n") * 1600
    block += "-----END PRIVATE KEY-----"
    text = "my key: " + block + " thanks " + ASCII_FILLER * 2000
    new, _, new_cap, _ = stored(exchange(json_body(text)), limit=64 * 1024)
    assert new is not None and new.startswith(f'"{TRUNCATION_MARK}')
    assert "[REDACTED:private_key]" in new and "QUJDQUJD" not in new
    assert new_cap.cut == {"request_body": 1}
    # The mark's total: the scrubbed head and the dropped tail, more than the cap.
    total, kept = (int(word) for word in orjson.loads(new).split(" kept]")[0].split()[1::4])
    assert kept < 64 * 1024 < total


def test_an_open_private_key_keeps_the_cut_before_it() -> None:
    block = "-----BEGIN PRIVATE KEY-----\n" + ("QUJD" * 16 + "\n") * 200  # no END in sight
    text = ASCII_FILLER * 30 + block + ASCII_FILLER * 30 + "-----END PRIVATE KEY----- ok"
    text += ASCII_FILLER * 200
    point = safe_point(text, LIMIT, HIGH, None)
    assert point <= text.index("-----BEGIN")
    new, old, _, _ = stored(exchange(json_body(text)))
    assert not leaked(new, old, "QUJD" * 4)


def test_many_open_key_markers_end_the_search_and_scrub_whole() -> None:
    text = "-----BEGIN " * (LIMIT // 2) + "x " * (2 * LIMIT)
    assert safe_point(text, LIMIT, HIGH, None) == -1
    new, old, _, _ = stored(exchange(json_body(text)))
    assert new == old


def test_lone_surrogates_go_the_old_way() -> None:
    for text in ("\udc80" + ASCII_FILLER * 100, ASCII_FILLER * 100 + "\ud800"):
        made = exchange(b"")
        made.request_body = json_body("placeholder")
        made.request_json = {"model": "m", "messages": [{"content": text}]}
        new, old, new_cap, old_cap = stored(made)
        assert new == old and new_cap.cut == old_cap.cut


@pytest.mark.parametrize("form", ["json", "raw"])
def test_a_limit_of_zero_keeps_every_body_whole(form: str) -> None:
    text = ASCII_FILLER * 1000 + "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFf"
    body = json_body(text) if form == "json" else text.encode()
    new, old, new_cap, _ = stored(exchange(body), limit=0)
    assert new == old and TRUNCATION_MARK not in (new or "") and not new_cap.cut
    assert "[REDACTED:api_key]" in (new or "")


def test_full_bodies_keep_personal_data_and_still_cut_before_credentials() -> None:
    key = "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFf"
    for offset in offsets(key):
        text = planted(ASCII_FILLER, 4 * LIMIT, offset, key, shrink=True)
        new, old, _, _ = stored(exchange(json_body(text)), bodies="full")
        assert not leaked(new, old, key), offset


def test_a_1mb_prompt_with_a_key_at_the_pre_cut_point_never_reaches_the_file(
    tmp_path: Path,
) -> None:
    """Through the real writer and DuckDB, at the default cap: the key straddles the first
    place the pre-cut point is looked for (2 x 128 KiB)."""
    cap = 128 * 1024
    key = "open sesame 42 XyZ qq"
    exchanges = []
    for i, shift in enumerate((-12, -5, 0, 3)):
        text = planted(ASCII_FILLER, 1024 * 1024, GUARD * cap + shift - len(key) // 2, key)
        made = exchange(json_body(text), (key,))
        made.request_id = f"0190f0f0-0000-7000-8000-00000000000{i}"
        exchanges.append(made)
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(StorageConfig(path=str(tmp_path / "precut.duckdb")), metrics)
    for made in exchanges:
        assert recorder.record(made)
    recorder.start()
    recorder.close(timeout_s=60)
    field = {"field": "request_body"}
    assert metrics.registry.get_sample_value("shadowtap_record_text_truncated_total", field) == 4
    con = open_readonly(tmp_path / "precut.duckdb")
    try:
        bodies = [row[0] for row in con.execute("SELECT request_body FROM exchanges").fetchall()]
    finally:
        con.close()
    assert len(bodies) == 4
    for body in bodies:
        assert orjson.loads(body).startswith(TRUNCATION_MARK)
        assert not [f for f in fragments(key) if f in body]


@pytest.mark.parametrize("form", ["json", "raw"])
def test_a_long_token_over_the_first_place_looked_at_is_kept_whole_in_the_window(
    form: str,
) -> None:
    # Tokens with no whitespace from below the limit to past GUARD x limit: an e-mail whose
    # local part is the token, a long api key; the window then ends after the token.
    for secret in ("Q" * 1500 + "@example.com", "sk-" + "Q1w2E3r4" * 200, "eyJ" + "A" * 1500):
        if secret.startswith("eyJ"):
            secret += ".eyJzdWIiOiIxMjM0NTY3.dozjgNryP4J3jVmNH"
        for offset in range(LIMIT - 200, HIGH, 97):
            text = planted(ASCII_FILLER, 6 * LIMIT, offset, " " + secret + " ")
            assert window(text, LIMIT, None) is not None  # the cost stays bounded
            body = json_body(text) if form == "json" else text.encode()
            new, old, _, _ = stored(exchange(body))
            assert not leaked(new, old, secret[-60:]), offset
            assert not leaked(new, old, secret[:60]), offset


def test_a_token_past_the_reach_is_scrubbed_whole() -> None:
    text = ASCII_FILLER * 10 + "Q" * (REACH * LIMIT) + "@example.com " + ASCII_FILLER * 10
    assert window(text, LIMIT, None) is None
    new, old, _, _ = stored(exchange(json_body(text)))
    assert new == old
