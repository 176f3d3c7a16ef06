"""Nothing leaked: canary secrets never reach the file, in any `storage.bodies` mode."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson
import pytest
from prometheus_client import CollectorRegistry
from shadowtap import redact as redact_module
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly
from shadowtap.recorder.store import safe_error
from shadowtap.redact import may_hold_secrets, redact, redact_json, redact_json_text

from tests.synthetic import synthetic_exchange

CREDENTIALS = {
    "api_key": "sk-proj-CANARYc4n4ry0123456789abcdef",
    "bearer": "Bearer CANARYbearer0123456789token",
    "aws": "AKIACANARY0123456789",
    "google": "AIzaCANARY0123456789abcdefghijklmnopqrs",
}
PII = {"email": "canary.person@example.com", "phone": "+1 415 555 0199"}
MARKER = "PLAINMARKERvisible"  # not a secret: proves the byte scan can see stored text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("use sk-abcdefghijklmnop1234 now", "use [REDACTED:api_key] now"),
        ("sk-ant-api03-abcdefghijklmnopqrstu", "[REDACTED:api_key]"),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: [REDACTED:bearer_token]"),
        ("key AKIAIOSFODNN7EXAMPLE here", "key [REDACTED:aws_access_key] here"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "[REDACTED:aws_secret_key]",
        ),
        ("ghp_" + "a1" * 18, "[REDACTED:api_key]"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVm", "[REDACTED:jwt]"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            "[REDACTED:private_key]",
        ),
        ("mail me: jane.doe+x@mail.example.org.", "mail me: [REDACTED:email]."),
        ("call (415) 555-0100 or +44 20 7946 0958", "call [REDACTED:phone] or [REDACTED:phone]"),
        ("415-555-0100", "[REDACTED:phone]"),
        # Not secrets: left alone.
        ("on 2024-01-15 at 10:30 we paid 1,234.56 for order 12345678", None),
        ("task-manager v1.2.3 runs in Asia; risk-free", None),
    ],
)
def test_redact_replaces_each_kind_with_a_typed_placeholder(text: str, expected: str) -> None:
    assert redact(text, pii=True) == (text if expected is None else expected)


def test_full_mode_keeps_personal_data_but_never_credentials() -> None:
    text = f"{CREDENTIALS['api_key']} {PII['email']}"
    assert redact(text, pii=False) == f"[REDACTED:api_key] {PII['email']}"
    nested = {"messages": [{"content": text}], CREDENTIALS["aws"]: 1}
    assert redact_json(nested, pii=True) == {
        "messages": [{"content": "[REDACTED:api_key] [REDACTED:email]"}],
        "[REDACTED:aws_access_key]": 1,
    }


def test_log_lines_never_quote_the_input_a_write_failed_on() -> None:
    con = duckdb.connect()
    with pytest.raises(duckdb.Error) as caught:
        con.execute("SELECT ?::JSON", [f'{{"broken {CREDENTIALS["api_key"]} {PII["email"]}'])
    assert CREDENTIALS["api_key"] in str(caught.value)  # DuckDB does quote it
    message = safe_error(caught.value)
    assert "ConversionException" in message
    assert CREDENTIALS["api_key"] not in message and PII["email"] not in message


def file_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def every_stored_value(path: Path) -> str:
    con = open_readonly(path)
    try:
        tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        return "\n".join(str(con.execute(f"SELECT * FROM {t}").fetchall()) for t in tables)
    finally:
        con.close()


@pytest.mark.parametrize("bodies", ["full", "redacted", "none"])
def test_canary_secrets_are_absent_from_the_file_in_every_mode(tmp_path: Path, bodies: str) -> None:
    canaries = " ".join([*CREDENTIALS.values(), *PII.values(), MARKER])
    store = tmp_path / "store"
    config = StorageConfig(
        path=str(store / "shadowtap.duckdb"), bodies=bodies, parquet_dir=str(store / "parquet")
    )
    recorder = Recorder(config, Metrics(CollectorRegistry()))
    recorder.start()
    for i in range(20):
        # i = 9 makes the candidate fail: the canaries then sit in its error message too.
        exchange = synthetic_exchange(i, extra=canaries, stream=i % 2 == 0)
        exchange.path = f"/v1/chat/completions?key={CREDENTIALS['google']}"
        exchange.request_body = b"not json: " + canaries.encode()
        exchange.request_json = None if i % 3 == 0 else exchange.request_json
        assert recorder.record(exchange)
    recorder.close()

    stored = every_stored_value(store / "shadowtap.duckdb")
    raw = file_bytes(store)
    assert b"PAR1" in raw  # the Parquet roll-up is part of what is scanned
    for secret in CREDENTIALS.values():
        assert secret not in stored
        assert secret.encode() not in raw
    for personal in PII.values():
        assert (personal in stored) == (bodies == "full")
        if bodies != "full":
            assert personal.encode() not in raw
    # Positive control: plain text is stored (error messages are kept in every mode) and the
    # byte scan sees it, so the absences above are not an artefact of compression.
    assert MARKER in stored
    assert MARKER.encode() in raw
    con = open_readonly(store / "shadowtap.duckdb")
    names = con.execute("SELECT DISTINCT unnest(header_names) FROM exchanges").fetchall()
    assert sorted(names) == [("authorization",), ("content-type",)]
    if bodies == "none":
        nulls = con.execute(
            "SELECT count(*) FILTER (WHERE text IS NOT NULL), "
            "count(*) FILTER (WHERE tool_calls::VARCHAR LIKE '%arguments%') FROM responses"
        ).fetchall()
        assert nulls == [(0, 0)]
        assert con.execute(
            "SELECT count(*) FROM exchanges WHERE request_body IS NOT NULL"
        ).fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM scores WHERE detail IS NOT NULL").fetchall() == [
            (0,)
        ]
    if bodies == "redacted":
        text = con.execute("SELECT text FROM responses WHERE text IS NOT NULL LIMIT 1").fetchall()
        assert "[REDACTED:api_key]" in text[0][0] and "[REDACTED:email]" in text[0][0]


def test_prefilter_knows_every_letter_re_folds_onto_an_ascii_one() -> None:
    # The bearer and AWS secret-key names match case-insensitively, and `re` then equates a
    # few non-ASCII letters with ASCII ones; the prefilter must fold exactly those.
    folds = re.compile("(?i)[a-z]").fullmatch
    odd = {chr(c) for c in range(0x80, 0x110000) if folds(chr(c))}
    assert odd == {chr(c) for c in redact_module._CASE_FOLDS}
    key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert redact(f"aws_\u017fecret_key = {key}", pii=False) == "[REDACTED:aws_secret_key]"
    assert redact(f"\u212awt \u212aearer {key}", pii=False) == f"\u212awt \u212aearer {key}"
    assert redact(f"BEARE\u212a {key}", pii=False) == f"BEARE\u212a {key}"  # no K in bearer
    assert redact(f"B\u0130 bEaReR {key}", pii=False) == "B\u0130 [REDACTED:bearer_token]"


def test_prefilter_never_hides_a_match_from_the_patterns() -> None:
    # `redact` runs a pattern only when the prefilter finds one of its fragments: on many
    # random mixtures of secret-shaped pieces it must give what running every pattern gives.
    pieces = [
        *("sk-", "SK-", "sk-proj-", "abcdefghijklmnop1234", "Bearer ", "bearer\t", "eyJ"),
        *("hbGciOiJIUzI1", ".", "_", "rk_live_", "pk_test_", "AIza", "AKIA", "ASIA", "ghp_"),
        *("IOSFODNN7EXAMPLE", "xoxb-", "hf_", "aws_secret_access_key", "AWS_SECRET_KEY", "="),
        *(": ", '"', "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "\n", "@", "jane.doe"),
        *("-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "example.com"),
        *("+1 ", "415", " ", "-", "555", "0100", "(415) ", "2024-01-15", "\u00e9", "\u017f"),
        *("\u212a", "\u0130", "\u65e5\u672c", "x", "0", "9", "12345678", "a@b.io"),
    ]
    patterns = redact_module
    rng = random.Random(3)
    for _ in range(4000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        for pii in (True, False):
            every = text
            if len(text) >= 6:
                every = patterns._substitute(
                    patterns._CREDENTIAL_RE, patterns._CREDENTIAL_KINDS, every
                )
                if pii:
                    every = patterns._substitute(patterns._EMAIL_RE, patterns._EMAIL_KINDS, every)
                    every = patterns._substitute(patterns._PHONE_RE, patterns._PHONE_KINDS, every)
            assert redact(text, pii=pii) == every, text
            assert may_hold_secrets(text, pii=pii) or every == text, text


@dataclass
class _Detail:
    quote: str


def test_json_redaction_sees_strings_in_tuples_dataclasses_and_objects() -> None:
    secret = CREDENTIALS["api_key"]

    class Opaque:
        def __str__(self) -> str:
            return f"opaque {secret}"

    value = {"t": (secret, 1), "d": _Detail(secret), "o": Opaque(), "k": [PII["email"]]}
    text = redact_json_text(value, pii=True)
    assert secret not in text and PII["email"] not in text
    assert orjson.loads(text) == {
        "t": ["[REDACTED:api_key]", 1],
        "d": {"quote": "[REDACTED:api_key]"},
        "o": "opaque [REDACTED:api_key]",
        "k": ["[REDACTED:email]"],
    }
    # Nothing to redact: the serialized text as is.
    assert redact_json_text({"a": (1, "plain")}, pii=True) == '{"a":[1,"plain"]}'
