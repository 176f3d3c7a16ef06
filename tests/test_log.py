"""No log line shows a secret: credential shapes and the exact values registered at start are
scrubbed from every string of an event, nested values and the formatted exception included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from shadowtap.config import ScorerSpec, parse_config
from shadowtap.log import add_secrets, configure_logging, secret_values
from shadowtap.redact import CREDENTIAL_PLACEHOLDER
from shadowtap.scorers.base import ScorerOptions
from shadowtap.scorers.text_similarity import TextSimilarity

# Shapes no pattern knows: only their registration keeps them out of the logs.
CANDIDATE_KEY = "odd-cand-key-1"
JUDGE_KEY = "judge:pass/word"
ADMIN_TOKEN = "admin-token-0123456789"
HEADER_VALUE = "x-gateway-secret-77"
BEARER = "Bearer abcdefgh12345678"  # a shape: scrubbed without registration


@pytest.fixture
def logging_to(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """configure_logging() as `serve` does, writing to the captured stderr (called from the
    test itself: during fixture set-up sys.stderr is not yet the test's); reads JSON lines."""

    def configure() -> Any:
        configure_logging("debug")
        return lambda: [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]

    yield configure
    structlog.reset_defaults()


def test_an_exception_s_text_is_scrubbed_after_it_is_formatted(logging_to: Any) -> None:
    lines = logging_to()
    log = structlog.get_logger("t")
    try:
        raise RuntimeError(f"upstream said: {BEARER} is not valid")
    except RuntimeError:
        log.exception("call_failed")
    [line] = lines()
    assert "RuntimeError" in line["exception"]
    assert BEARER not in str(line)
    assert "[REDACTED:bearer_token]" in line["exception"]


def test_registered_values_are_scrubbed_everywhere_in_an_event(logging_to: Any) -> None:
    lines = logging_to()
    add_secrets([CANDIDATE_KEY, JUDGE_KEY, ADMIN_TOKEN, HEADER_VALUE])
    log = structlog.get_logger("t")
    error = ValueError(f"bad key {CANDIDATE_KEY}")
    try:
        raise KeyError(JUDGE_KEY)
    except KeyError:
        log.exception(
            f"event naming {ADMIN_TOKEN}",
            message=f"rejected {CANDIDATE_KEY}",
            nested={"list": [f"x {HEADER_VALUE}", {JUDGE_KEY: 1}], "n": 3},
            error=error,  # an object, rendered as its text
            targets=(CANDIDATE_KEY,),
        )
    [line] = lines()
    text = orjson.dumps(line).decode()
    for secret in (CANDIDATE_KEY, JUDGE_KEY, ADMIN_TOKEN, HEADER_VALUE):
        assert secret not in text, secret
    assert line["message"] == f"rejected {CREDENTIAL_PLACEHOLDER}"
    assert line["nested"] == {
        "list": [f"x {CREDENTIAL_PLACEHOLDER}", {CREDENTIAL_PLACEHOLDER: 1}],
        "n": 3,
    }
    assert line["error"] == f"bad key {CREDENTIAL_PLACEHOLDER}"
    assert CREDENTIAL_PLACEHOLDER in line["exception"]
    # Other values pass untouched.
    assert line["level"] == "error" and isinstance(line["nested"]["n"], int)


def test_every_configured_secret_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {
        "server": {"admin_token": ADMIN_TOKEN},
        "primary": {"url": "https://api.example.com"},
        "candidates": {
            "small": {
                "url": "http://127.0.0.1:8001",
                "api_key": CANDIDATE_KEY,
                "headers": {"X-Gateway": HEADER_VALUE},
            }
        },
        "secondary": {"api_key": "secondary-key-9"},
        "scorers": {
            "judge": {
                "type": "llm_judge",
                "url": "http://127.0.0.1:8002",
                "api_key": JUDGE_KEY,
                "model": "m",
            }
        },
    }
    found = set(secret_values(parse_config(raw, {})))
    assert found == {
        ADMIN_TOKEN,
        CANDIDATE_KEY,
        HEADER_VALUE,
        "secondary-key-9",
        JUDGE_KEY,
    }


class PlugOptions(ScorerOptions):
    token: str  # a plug-in may hold its secret as a plain string
    label: str = "not-a-secret"


def test_a_plug_in_scorers_plain_string_secret_is_found() -> None:
    options = PlugOptions(type="plug", token="plug-token-77")
    spec = ScorerSpec("plug", "plug", TextSimilarity, options)
    raw = {"primary": {"url": "https://api.example.com"}}
    config = parse_config(raw, {}).model_copy(update={"scorers": {"plug": spec}})
    assert secret_values(config) == ["plug-token-77"]
