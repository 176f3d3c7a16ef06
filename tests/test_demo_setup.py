"""The demo's written config is valid TOML that shadowtap's strict loader accepts as is."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

from shadowtap.config import parse_config
from shadowtap.demo.profiles import PROFILES
from shadowtap.demo.setup import CANDIDATES, GATED_SCORERS, SCORERS, demo_config, to_toml
from shadowtap.scorers.registry import build_scorers


def test_written_config_round_trips_and_validates(tmp_path: Path) -> None:
    urls = {name: f"http://127.0.0.1:{8000 + i}" for i, name in enumerate(("primary", *CANDIDATES))}
    raw = demo_config(urls, tmp_path, speed=1.0)
    assert tomllib.loads(to_toml(raw)) == raw
    config = parse_config(tomllib.loads(to_toml(raw)), environ={})
    assert list(config.candidates) == list(CANDIDATES)
    assert config.candidates["paraphrase"].model == "paraphrase"
    assert config.secondary.rate == 1.0 and config.sampling.rate == 1.0
    assert config.gates.scorers == GATED_SCORERS
    assert config.storage.path == str(tmp_path / "shadowtap.duckdb")
    assert len(build_scorers(config.scorers)) == len(SCORERS)


def test_hangs_outlast_the_shadow_timeout_and_answers_fit_under_it() -> None:
    """flaky's hangs must end as timeouts (errors), and no healthy answer may time out."""
    urls = dict.fromkeys(("primary", *CANDIDATES), "http://127.0.0.1:1")
    rng = random.Random(0)
    for speed in (0.5, 1.0, 20.0, 1000.0):
        timeout_s = demo_config(urls, Path("."), speed)["candidates"]["flaky"]["timeout_s"]
        assert PROFILES["flaky"].hang_s > 2 * timeout_s
        for profile in PROFILES.values():
            # the longest answers (~130 tokens) at a one-in-a-thousand slow draw of both delays
            slowest = max(
                profile.ttft_s(rng, speed) + 130 * profile.token_delay_s(rng, speed)
                for _ in range(1000)
            )
            assert slowest < timeout_s, (profile.name, speed)
