"""Config is validated at start: every mistake stops with one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from shadowtap.config import ConfigError, load_config, masked, parse_config

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
        ({**BASE, "scorers": {"s": {"threshold": 0.5}}}, "needs a 'type'"),
    ],
)
def test_bad_values_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


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
