"""The exact credentials a request carried never reach storage, whatever their shape: a key
too short or too odd for any pattern, echoed back in an upstream's 401, is scrubbed from every
stored field in every `storage.bodies` mode, Parquet roll-up included."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import ToolCall
from shadowtap.config import StorageConfig
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly
from shadowtap.redact import CREDENTIAL_PLACEHOLDER, ExactSecrets, redact, redact_json_text
from yarl import URL

from tests.synthetic import synthetic_exchange

# No shape matches any of these: only knowing the exact value can scrub them.
TOKEN = "sk-CANARY-123456"  # the key: too short for the api_key shape
HEADER_KEY = 'k3y"with\\quote'  # a JSON-escaped form in stored JSON
QUERY_KEY = "q key/with+odd&chars"  # percent-encoded where it comes back in a URL
CREDENTIALS = (f"Bearer {TOKEN}", HEADER_KEY, QUERY_KEY)
ESCAPED = orjson.dumps(HEADER_KEY).decode()[1:-1]
LEAKS = (TOKEN, HEADER_KEY, QUERY_KEY, quote(QUERY_KEY, safe=""), ESCAPED)


def test_exact_values_are_replaced_in_every_form() -> None:
    secrets = ExactSecrets(CREDENTIALS)
    text = f"Incorrect API key provided: {TOKEN}. Authorization: Bearer {TOKEN}"
    assert redact(text, pii=False, secrets=secrets) == (
        f"Incorrect API key provided: {CREDENTIAL_PLACEHOLDER}. "
        f"Authorization: {CREDENTIAL_PLACEHOLDER}"
    )
    url = f"/v1/chat?api_key={quote(QUERY_KEY, safe='')}&x=1"
    assert (
        redact(url, pii=False, secrets=secrets) == f"/v1/chat?api_key={CREDENTIAL_PLACEHOLDER}&x=1"
    )
    value = {"messages": [{"content": f"my key is {HEADER_KEY}"}], TOKEN: [QUERY_KEY]}
    stored = redact_json_text(value, pii=False, secrets=secrets)
    assert orjson.loads(stored) == {
        "messages": [{"content": f"my key is {CREDENTIAL_PLACEHOLDER}"}],
        CREDENTIAL_PLACEHOLDER: [CREDENTIAL_PLACEHOLDER],
    }
    # Percent-encoded in lower-case hex, as some clients' encoders write it.
    lower = quote(QUERY_KEY, safe="").replace("%2F", "%2f").replace("%2B", "%2b")
    assert lower != quote(QUERY_KEY, safe="")
    assert redact(f"?k={lower}", pii=False, secrets=secrets) == f"?k={CREDENTIAL_PLACEHOLDER}"
    # With "/" left as it is: `quote`'s default, and yarl's (aiohttp's URLs) in a query.
    yarl = URL("http://h/").with_query({"k": QUERY_KEY}).raw_query_string[2:]
    for kept in (quote(QUERY_KEY), yarl, yarl.replace("%2B", "%2b")):
        assert "/" in kept and "%2B" in kept.upper()
        assert redact(f"?k={kept}", pii=False, secrets=secrets) == f"?k={CREDENTIAL_PLACEHOLDER}"
    # Without the exact values, none of them is caught: this is what the seam adds.
    assert TOKEN in redact(text.replace("Bearer ", ""), pii=True)


def test_short_and_empty_values_are_not_scrubbed() -> None:
    # No issued key is this short, and the handler does not collect them either.
    secrets = ExactSecrets(["", "a", "abc"])
    assert not secrets
    assert redact("a banana, abc", pii=False, secrets=secrets) == "a banana, abc"
    # The whole header value is long enough, its two-letter token alone is not.
    bearer = ExactSecrets(["Bearer ab"])
    assert bearer.scrub("Bearer ab, a cab") == f"{CREDENTIAL_PLACEHOLDER}, a cab"


def test_scrubbing_never_inflates_a_text_more_than_twofold() -> None:
    # A client choosing both a short "key" and a body full of it must not make the writer
    # hold five times the body: such a text is replaced whole.
    secrets = ExactSecrets(["abcd"])
    echo = "Incorrect API key provided: abcd."
    assert secrets.scrub(echo) == f"Incorrect API key provided: {CREDENTIAL_PLACEHOLDER}."
    assert secrets.scrub("abcd " * 10) == CREDENTIAL_PLACEHOLDER
    assert secrets.scrub("abcd" * 100_000) == CREDENTIAL_PLACEHOLDER


def every_stored_value(path: Path) -> str:
    con = open_readonly(path)
    try:
        tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        rows = [row for t in tables for row in con.execute(f"SELECT * FROM {t}").fetchall()]
        return "\n".join(str(value) for row in rows for value in row)
    finally:
        con.close()


def file_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("bodies", ["full", "redacted", "none"])
def test_request_credentials_are_absent_from_the_file_in_every_mode(
    tmp_path: Path, bodies: str
) -> None:
    echo = " ".join(CREDENTIALS)
    store = tmp_path / "store"
    config = StorageConfig(
        path=str(store / "shadowtap.duckdb"),
        bodies=bodies,  # type: ignore[arg-type]
        parquet_dir=str(store / "parquet"),
    )
    recorder = Recorder(config, Metrics(CollectorRegistry()))
    recorder.start()
    for i in range(20):
        # i = 9 makes the candidate fail: the 401-style echo then sits in its error message.
        exchange = synthetic_exchange(i, extra=f"echo: {echo}")
        exchange.credentials = CREDENTIALS
        exchange.path = f"/v1/chat/completions?api_key={quote(QUERY_KEY, safe='')}"
        exchange.model = f"model {TOKEN}"
        exchange.results["small"].completion.tool_calls = [
            ToolCall(name=f"tool {TOKEN}", arguments=orjson.dumps({"k": HEADER_KEY}).decode())
        ]
        if i % 3 == 0:  # a body that is not JSON is stored as text: scrubbed there too
            exchange.request_json = None
            exchange.request_body = f"raw {echo}".encode()
        assert recorder.record(exchange)
    recorder.close()

    stored = every_stored_value(store / "shadowtap.duckdb")
    raw = file_bytes(store)
    assert b"PAR1" in raw  # the Parquet roll-up is part of what is scanned
    for leak in LEAKS:
        assert leak not in stored, leak
        assert leak.encode() not in raw, leak
    # Positive control: the placeholder is what is stored in their place, and the byte scan
    # sees stored text.
    assert CREDENTIAL_PLACEHOLDER in stored
    assert CREDENTIAL_PLACEHOLDER.encode() in raw
