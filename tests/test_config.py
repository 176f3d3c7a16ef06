"""Config is validated at start: every mistake stops with one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from shadowtap.config import (
    ConfigError,
    ReportTables,
    ScorerSpec,
    StickyKey,
    load_config,
    load_tables,
    masked,
    parse_config,
)
from shadowtap.log import secret_values
from shadowtap.scorers.registry import build_scorers
from shadowtap.scorers.text_similarity import TextSimilarity, TextSimilarityOptions

BASE = {"primary": {"url": "https://api.openai.com"}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**BASE, "extra": 1}, "config error: extra: unknown key"),
        ({**BASE, "sampling": {"rat": 0.1}}, "config error: sampling.rat: unknown key"),
        ({**BASE, "sampling": {"rate": 1.5}}, "config error: sampling.rate:"),
        ({**BASE, "sampling": {"rate": -0.1}}, "config error: sampling.rate:"),
        ({"primary": {"url": "not a url"}}, "config error: primary.url: must be an http(s) URL"),
        ({"primary": {}}, "config error: primary.url: required key is missing"),
        ({**BASE, "candidates": {"c": {"url": "ftp://x"}}}, "config error: candidates.c.url:"),
        ({**BASE, "candidates": {"c": {"url": "http://x", "rate": 2}}}, "candidates.c.rate"),
        ({**BASE, "candidates": {"primary": {"url": "http://x"}}}, "reserved"),
        ({**BASE, "sampling": {"key": "cookie:x"}}, "config error: sampling.key: must be"),
        ({**BASE, "server": {"listen": "8080"}}, "config error: server.listen: must be HOST:PORT"),
        (
            {**BASE, "server": {"listen": "0.0.0.0:9000", "admin_listen": "0.0.0.0:9000"}},
            "config error: server: admin_listen must differ from listen",
        ),
        ({**BASE, "storage": {"bodies": "some"}}, "config error: storage.bodies:"),
        (
            {**BASE, "scorers": {"s": {"threshold": 0.5}}},
            "config error: scorers.s.type: required key is missing",
        ),
    ],
)
def test_bad_values_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("field", ["primary", "candidate", "judge"])
def test_a_url_carrying_a_user_or_password_is_refused_without_echoing_it(field: str) -> None:
    """The upstream client sends no userinfo, and the URL is printed at start: refused."""
    url = "https://alice:sk-url-secret-77@api.example.com/v1"
    raw: dict = {**BASE}
    if field == "primary":
        raw = {"primary": {"url": url}}
    elif field == "candidate":
        raw["candidates"] = {"c": {"url": url}}
    else:
        raw["scorers"] = {"j": {"type": "llm_judge", "url": url, "model": "m"}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert "must not carry a user or password" in str(caught.value)
    assert "sk-url-secret-77" not in str(caught.value) and "alice" not in str(caught.value)


def test_env_substitution_and_unset_variables() -> None:
    raw = {**BASE, "candidates": {"small": {"url": "${SMALL_URL}", "api_key": "${SMALL_KEY}"}}}
    config = parse_config(raw, {"SMALL_URL": "http://127.0.0.1:8001", "SMALL_KEY": "sk-abc"})
    assert config.candidates["small"].url == "http://127.0.0.1:8001"
    assert config.candidates["small"].api_key.get_secret_value() == "sk-abc"
    with pytest.raises(ConfigError, match=r"candidates.small.api_key: .*SMALL_KEY is not set"):
        parse_config(raw, {"SMALL_URL": "http://127.0.0.1:8001"})


def test_design_example_loads_and_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "shadowtap.toml"
    path.write_text(
        """
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9464"
[primary]
url = "https://api.openai.com"
[sampling]
rate = 0.05
routes = ["/v1/chat/completions"]
[candidates.small]
url = "http://127.0.0.1:8001"
model = "llama-3.1-8b"
api_key = "${SMALL_KEY}"
headers = { "X-Secret" = "hdr-secret-value" }
[scorers.similarity]
type = "text_similarity"
[storage]
path = "shadowtap.duckdb"
"""
    )
    config = load_config(path, {"SMALL_KEY": "sk-very-secret"})
    assert config.candidates["small"].model == "llama-3.1-8b"
    shown = str(masked(config))
    assert "sk-very-secret" not in shown and "hdr-secret-value" not in shown
    assert "llama-3.1-8b" in shown


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[primary\nurl=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_a_gate_is_switched_off_with_false() -> None:
    config = parse_config({**BASE, "gates": {"max_error_rate": False}}, {})
    assert config.gates.max_error_rate is None
    assert config.gates.max_agreement_drop == 0.05
    with pytest.raises(ConfigError, match=r"gates\.max_error_rate"):
        parse_config({**BASE, "gates": {"max_error_rate": True}}, {})


def test_a_malformed_secret_is_never_echoed() -> None:
    raw = {**BASE, "candidates": {"c": {"url": "http://x", "api_key": ["sk-echo-me-not-123"]}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert "candidates.c.api_key" in str(caught.value)
    assert "sk-echo-me-not" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, "candidates": {"c": {"url": "http://x", "api_key": 12345}}}, {})
    assert "12345" not in str(caught.value)


# -- resolved once: scorers and the sticky key are typed at load -------------------------------


def test_scorer_tables_resolve_to_typed_specs_at_load() -> None:
    raw = {**BASE, "scorers": {"sim": {"type": "text_similarity", "threshold": 0.6}}}
    spec = parse_config(raw, {}).scorers["sim"]
    assert isinstance(spec, ScorerSpec)
    assert (spec.name, spec.kind, spec.factory) == ("sim", "text_similarity", TextSimilarity)
    assert isinstance(spec.options, TextSimilarityOptions)
    assert (spec.threshold, spec.options.method) == (0.6, "sequence")  # defaults resolved
    (built,) = build_scorers({"sim": spec})
    assert isinstance(built, TextSimilarity) and built.options is spec.options


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (  # unknown scorer kind
            {"type": "text_similarity_v2"},
            "config error: scorers.sim.type: unknown scorer type 'text_similarity_v2'; known: ",
        ),
        (  # unknown option
            {"type": "text_similarity", "methd": "bag"},
            "config error: scorers.sim.methd: unknown key",
        ),
        (  # wrong type
            {"type": "text_similarity", "threshold": "high"},
            "config error: scorers.sim.threshold: Input should be a valid number, unable to "
            "parse string as a number (got 'high')",
        ),
        ({"type": 3}, "config error: scorers.sim.type: must be a string"),
        ("text_similarity", "config error: scorers.sim: must be a table"),
    ],
)
def test_scorer_errors_name_the_exact_key_at_load(table: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, "scorers": {"sim": table}}, {})
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_scorer_secret_is_masked_when_the_config_is_shown() -> None:
    # Scorer tables were printed as given by check-config, api_key and all.
    judge = {"type": "llm_judge", "url": "http://127.0.0.1:9", "model": "m", "api_key": "sk-j-42"}
    config = parse_config({**BASE, "scorers": {"judge": judge}}, {})
    shown = masked(config)
    assert shown["scorers"]["judge"]["api_key"] == "**********"
    assert shown["scorers"]["judge"]["model"] == "m"
    assert "sk-j-42" not in str(shown) and "sk-j-42" not in repr(config)
    assert "sk-j-42" in secret_values(config)  # still registered to be scrubbed from logs


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("header:x-user", StickyKey("header", "x-user")),
        ("body:user", StickyKey("body", "user")),
        ("body:metadata.user id", StickyKey("body", "metadata.user id")),  # a top-level field
    ],
)
def test_the_sticky_key_is_typed_at_load(key: str, parsed: StickyKey) -> None:
    config = parse_config({**BASE, "sampling": {"key": key}}, {})
    assert config.sampling.key == parsed
    assert masked(config)["sampling"]["key"] == key  # shown as written


@pytest.mark.parametrize(
    "key", ["cookie:x", "header:", "body:", "header", "header:x user", "header:x:y", "", 7]
)
def test_a_bad_sticky_key_is_a_load_error(key: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, "sampling": {"key": key}}, {})
    assert str(caught.value) == (
        f"config error: sampling.key: must be 'header:<name>' or 'body:<field>' (got {key!r})"
    )


def test_a_sticky_key_given_as_a_table_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^config error: sampling\.key: must be"):
        parse_config({**BASE, "sampling": {"key": {"source": "header", "name": "x"}}}, {})


def test_report_tables_load_without_the_proxys_secrets(tmp_path: Path) -> None:
    path = tmp_path / "shadowtap.toml"
    path.write_text(
        '[candidates.c]\nurl = "${UNSET_URL}"\napi_key = "${UNSET_KEY}"\n'
        '[scorers.sim]\ntype = "text_similarity"\nthreshold = 0.7\n'
        "[gates]\nmin_pairs = 40\n",
        encoding="utf-8",
    )
    tables = load_tables(path, ReportTables, {})
    assert tables.gates.min_pairs == 40 and tables.scorers["sim"].threshold == 0.7
    with pytest.raises(ConfigError, match="UNSET_URL is not set"):
        load_config(path, {})


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "shadowtap.toml"
    path.write_bytes(b'[primary]\nurl = "http://\xff"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path, {})


def test_a_candidate_names_its_api_and_where_it_serves_it() -> None:
    config = parse_config(
        {
            **BASE,
            "sampling": {"routes": ["/llm/chat"], "route_dialects": {"/llm/chat": "openai-chat"}},
            "candidates": {
                "claude": {
                    "url": "https://api.anthropic.com",
                    "dialect": "anthropic-messages",
                    "max_tokens": 1024,
                },
                "gateway": {"url": "http://gw", "dialect": "openai-responses", "path": "/r"},
                "same": {"url": "http://same"},
            },
        },
        {},
    )
    claude, gateway, same = config.candidates.values()
    assert (claude.dialect, claude.path, claude.max_tokens) == ("anthropic-messages", None, 1024)
    assert (gateway.dialect, gateway.path) == ("openai-responses", "/r")
    assert same.dialect is None and config.sampling.route_dialects == {"/llm/chat": "openai-chat"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"candidates": {"c": {"url": "http://x", "dialect": "gemini"}}},
            "config error: candidates.c.dialect: Input should be",
        ),
        (
            {"candidates": {"c": {"url": "http://x", "path": "v1/messages"}}},
            "config error: candidates.c.path: must be a path starting with '/'",
        ),
        (
            {"candidates": {"c": {"url": "http://x", "max_tokens": 0}}},
            "config error: candidates.c.max_tokens:",
        ),
        (
            {"sampling": {"route_dialects": {"/x": "openai-chatx"}}},
            "config error: sampling.route_dialects./x: Input should be",
        ),
    ],
)
def test_bad_dialect_settings_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, **raw}, {})
    assert str(caught.value).startswith(message), caught.value


def test_a_clients_key_never_goes_to_another_provider() -> None:
    anthropic = {"url": "http://x", "dialect": "anthropic-messages", "forward_client_auth": True}
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, "candidates": {"claude": anthropic}}, {})
    assert str(caught.value) == (
        "config error: candidates.claude.forward_client_auth: the clients of "
        "/v1/chat/completions authenticate with OpenAI, and claude speaks anthropic-messages: "
        "set candidates.claude.api_key instead"
    )
    # Another OpenAI API is the same provider; an Anthropic route to an Anthropic candidate too.
    responses = {**anthropic, "dialect": "openai-responses"}
    assert parse_config({**BASE, "candidates": {"r": responses}}, {}).candidates["r"]
    on_messages = {**BASE, "sampling": {"routes": ["/v1/messages"]}}
    assert parse_config({**on_messages, "candidates": {"claude": anthropic}}, {})


def test_the_config_knows_every_dialect_and_only_those() -> None:
    from typing import get_args

    from shadowtap.config_base import DialectName
    from shadowtap.dialects import DIALECTS

    assert set(get_args(DialectName)) == set(DIALECTS)
