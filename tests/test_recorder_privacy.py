"""Nothing leaked: canary secrets never reach the file, in any `storage.bodies` mode."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from prometheus_client import CollectorRegistry

from proxy.config import StorageConfig
from proxy.metrics import Metrics
from proxy.recorder import Recorder, open_readonly
from proxy.recorder.synthetic import synthetic_exchange
from proxy.recorder.writer import safe_error
from proxy.redact import redact, redact_json

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
