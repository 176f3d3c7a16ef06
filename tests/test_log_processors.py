"""shadowtap.log's processors, one event at a time through `structlog.testing.capture_logs`:
what a call site passes under a secret key is dropped, and every string is scrubbed (keys,
nested values, objects, and the traceback, as the scrub runs after it is formatted)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from shadowtap import log
from shadowtap.log import DROPPED_KEYS, MAX_DEPTH, add_secrets, processors
from shadowtap.redact import CREDENTIAL_PLACEHOLDER
from structlog.testing import capture_logs

API_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"  # a shape: scrubbed without registration
REGISTERED = "odd-shaped-secret-42"  # no pattern knows it: only its registration hides it


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with nothing registered and leaves nothing behind (add_secrets only
    ever adds)."""
    monkeypatch.setattr(log._Known, "values", frozenset())
    monkeypatch.setattr(log._Known, "secrets", None)
    yield


def events(emit: Any) -> list[dict[str, Any]]:
    """The event dicts `emit(logger)` produces through every processor but the renderer."""
    *before_rendering, renderer = processors()
    assert isinstance(renderer, structlog.processors.JSONRenderer)
    with capture_logs(processors=before_rendering) as captured:
        emit(structlog.get_logger("test"))
    return captured


def test_values_under_secret_keys_are_dropped_whatever_their_type() -> None:
    values: dict[str, Any] = {key: {"nested": "harmless"} for key in DROPPED_KEYS}
    values["headers"] = {"Authorization": "Basic dXNlcjpwYXNz"}
    values["text"] = 12345  # not a string: dropped all the same
    [event] = events(lambda logger: logger.info("sent", target="small", **values))
    assert {key: event[key] for key in DROPPED_KEYS} == dict.fromkeys(DROPPED_KEYS, "[dropped]")
    assert event["target"] == "small"
    assert event["event"] == "sent" and event["log_level"] == "info"


def test_a_traceback_is_scrubbed_after_it_is_formatted() -> None:
    def emit(logger: Any) -> None:
        try:
            raise PermissionError(f"upstream rejected {API_KEY}")
        except PermissionError:
            logger.exception("call_failed")

    [event] = events(emit)
    assert "exc_info" not in event  # formatted into "exception" before the scrub
    assert "PermissionError: upstream rejected [REDACTED:api_key]" in event["exception"]
    assert "Traceback" in event["exception"]
    assert API_KEY not in str(event)


def test_registered_secrets_are_scrubbed_in_keys_nested_values_and_objects() -> None:
    add_secrets([REGISTERED])

    class Thing:
        def __str__(self) -> str:
            return f"thing holding {REGISTERED}"

    [event] = events(
        lambda logger: logger.warning(
            f"event {REGISTERED}",
            nested={REGISTERED: [f"a {REGISTERED}", (1, 2.5, None, True)]},
            thing=Thing(),
            tags={REGISTERED},
        )
    )
    assert event["event"] == f"event {CREDENTIAL_PLACEHOLDER}"
    assert event["nested"] == {
        CREDENTIAL_PLACEHOLDER: [f"a {CREDENTIAL_PLACEHOLDER}", [1, 2.5, None, True]]
    }
    assert event["thing"] == f"thing holding {CREDENTIAL_PLACEHOLDER}"
    assert event["tags"] == [CREDENTIAL_PLACEHOLDER]
    assert REGISTERED not in str(event)


def test_an_unregistered_odd_value_passes_and_registration_only_adds() -> None:
    [before] = events(lambda logger: logger.info("x", value=REGISTERED))
    assert before["value"] == REGISTERED  # the scrub is not blanket: it needs to know it
    add_secrets([REGISTERED])
    add_secrets(["another-odd-secret-7"])
    [after] = events(lambda logger: logger.info("x", value=f"{REGISTERED} another-odd-secret-7"))
    assert after["value"] == f"{CREDENTIAL_PLACEHOLDER} {CREDENTIAL_PLACEHOLDER}"


def test_values_nested_too_deep_are_not_logged() -> None:
    deep: Any = API_KEY
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    [event] = events(lambda logger: logger.info("deep", value=deep, shallow=[[API_KEY]]))
    value = event["value"]
    for _ in range(MAX_DEPTH):
        [value] = value
    assert value == "[nested]"
    assert event["shallow"] == [["[REDACTED:api_key]"]]


def test_secret_keys_are_dropped_in_any_spelling_and_at_any_depth() -> None:
    """A call site that logs a headers-like mapping under an innocent name, or spells a secret
    key the way HTTP does, still shows no value: the key decides, not its case or nesting."""
    upstream = {
        "Authorization": REGISTERED + "-a",
        "X-Api-Key": REGISTERED + "-b",
        "status": 401,
        "retry": [{"API_KEY": REGISTERED + "-c", "attempt": 2}],
    }
    [event] = events(
        lambda logger: logger.warning(
            "rejected", Authorization=REGISTERED + "-d", upstream=upstream, Token="t-0123"
        )
    )
    assert event["Authorization"] == "[dropped]" and event["Token"] == "[dropped]"
    assert event["upstream"] == {
        "Authorization": "[dropped]",
        "X-Api-Key": "[dropped]",
        "status": 401,
        "retry": [{"API_KEY": "[dropped]", "attempt": 2}],
    }
    assert REGISTERED not in str(event)


def test_a_key_is_judged_alike_every_time_whatever_its_type() -> None:
    """Keys are judged once and remembered: the second line is dropped exactly as the first,
    and keys that are not strings (a nested mapping's) are judged by their text."""
    nested = {3: "three", ("a",): "tuple", "Api-Key": REGISTERED, 4: [{"password": REGISTERED}]}
    for _ in range(2):
        event = log.drop_secrets(None, "info", {"X-Api-Key": REGISTERED, "n": 1, "d": nested})
        assert event == {
            "X-Api-Key": "[dropped]",
            "n": 1,
            "d": {
                3: "three",
                ("a",): "tuple",
                "Api-Key": "[dropped]",
                4: [{"password": "[dropped]"}],
            },
        }
