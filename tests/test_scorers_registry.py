"""build_scorers: entry-point lookup, strict options, and a real third-party scorer package."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import Completion
from shadowtap.config import ConfigError
from shadowtap.metrics import Metrics
from shadowtap.scorers import CpuScorer
from shadowtap.scorers.runner import ScoringRunner

from tests.exchanges import chat_exchange
from tests.scorer_tables import scorers_from

BUILTINS = (
    "embedding_agreement, embedding_similarity, exact_match, json_match, json_schema_valid, "
    "length_ratio, llm_judge, refusal, text_similarity, tool_calls"
)
SCORERS_DOC = Path(__file__).resolve().parent.parent / "docs" / "scorers.md"


def test_builtins_load_in_config_order_with_their_options() -> None:
    scorers = scorers_from(
        {
            "sim": {"type": "text_similarity", "threshold": 0.6, "method": "bag"},
            "exact": {"type": "exact_match", "rate": 0.5},
            "judge": {"type": "llm_judge", "url": "http://127.0.0.1:9", "model": "j"},
        }
    )
    assert [(s.name, s.options.type) for s in scorers] == [
        ("sim", "text_similarity"),
        ("exact", "exact_match"),
        ("judge", "llm_judge"),
    ]
    assert (scorers[0].threshold, scorers[0].rate) == (0.6, 1.0)
    assert (scorers[1].threshold, scorers[1].rate) == (0.8, 0.5)
    assert [isinstance(s, CpuScorer) for s in scorers] == [True, True, False]
    assert scorers_from({}) == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"type": "nope"},
            f"config error: scorers.s.type: unknown scorer type 'nope'; known: {BUILTINS}",
        ),
        ({}, "config error: scorers.s.type: required key is missing"),
        ({"type": "text_similarity", "methd": "bag"}, "config error: scorers.s.methd: unknown key"),
        (
            {"type": "text_similarity", "method": "chars"},
            "config error: scorers.s.method: Input should be 'sequence' or 'bag' (got 'chars')",
        ),
        (
            {"type": "exact_match", "threshold": 1.5},
            "config error: scorers.s.threshold: Input should be less than or equal to 1 (got 1.5)",
        ),
        (
            {"type": "exact_match", "rate": -0.1},
            "config error: scorers.s.rate: Input should be greater than or equal to 0 (got -0.1)",
        ),
        (
            {"type": "llm_judge", "model": "j"},
            "config error: scorers.s.url: required key is missing",
        ),
        (
            {"type": "llm_judge", "url": "ftp://x", "model": "j"},
            "config error: scorers.s.url: must be an http(s) URL with a host (got 'ftp://x')",
        ),
        (
            {"type": "llm_judge", "url": "http://x", "model": "j", "max_inflight": 1},
            "config error: scorers.s.max_inflight: "
            "Input should be greater than or equal to 2 (got 1)",
        ),
    ],
)
def test_bad_tables_stop_the_start_naming_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        scorers_from({"s": table})
    assert str(caught.value) == message


def test_bad_names_and_secret_values_in_errors() -> None:
    with pytest.raises(ConfigError, match=r"scorers\.bad name: scorer name must match"):
        scorers_from({"bad name": {"type": "exact_match"}})
    with pytest.raises(ConfigError) as caught:
        scorers_from(
            {"j": {"type": "llm_judge", "url": "http://x", "model": "m", "api_key": 12345}}
        )
    assert str(caught.value).startswith("config error: scorers.j.api_key:")
    assert "12345" not in str(caught.value)


# -- a third-party package, installed for real ---------------------------------------------------


def readme_example() -> tuple[str, str]:
    """The pyproject and module of the README's third-party example: the docs are what we test."""
    section = SCORERS_DOC.read_text(encoding="utf-8")
    blocks = dict(
        re.findall(
            r"```(toml|python)\n# (?:pyproject\.toml|my_scorers\.py)\n(.*?)```", section, re.DOTALL
        )
    )
    return blocks["toml"], blocks["python"]


@pytest.fixture
def example_package(tmp_path: Path) -> Iterator[str]:
    """Install the README example under unique names (parallel runs share this venv);
    yield its scorer type; uninstall afterwards."""
    pyproject, module = readme_example()
    suffix = uuid.uuid4().hex[:8]
    dist, mod, type_name = (
        f"my-scorers-{suffix}",
        f"my_scorers_{suffix}",
        f"same_first_word_{suffix}",
    )
    pyproject = (
        pyproject.replace('"my-scorers"', f'"{dist}"')
        .replace("my_scorers:", f"{mod}:")
        .replace("same_first_word =", f"{type_name} =")
    )
    pyproject += f'\n[tool.setuptools]\npy-modules = ["{mod}"]\n'
    pyproject = (
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        + pyproject
    )
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / f"{mod}.py").write_text(module)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # With build isolation: a venv made by `python -m venv` has setuptools 65 without `wheel`,
    # which cannot build a wheel in place; pip fetches a current setuptools instead (~3 s).
    installed = subprocess.run(
        [*pip, "install", "--no-deps", str(tmp_path)], capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    importlib.invalidate_caches()
    try:
        yield type_name
    finally:
        subprocess.run([*pip, "uninstall", "-y", dist], check=True, capture_output=True)
        sys.modules.pop(mod, None)
        importlib.invalidate_caches()


async def test_a_third_party_scorer_package_loads_and_scores(example_package: str) -> None:
    with pytest.raises(ConfigError, match=r"scorers\.first\.case_sensitiv: unknown key"):
        scorers_from({"first": {"type": example_package, "case_sensitiv": True}})
    scorers = scorers_from({"first": {"type": example_package, "threshold": 1.0}})
    assert type(scorers[0]).__name__ == "SameFirstWord"

    texts = {"primary": "Paris is it", "same": "paris is the answer", "other": "Lyon"}
    exchange = chat_exchange({n: Completion(status=200, text=t) for n, t in texts.items()})
    registry = CollectorRegistry()
    async with aiohttp.ClientSession() as session:
        runner = ScoringRunner(scorers, Metrics(registry), session)
        scores = await runner.score(exchange)
        await runner.close()
    assert {s.target: s.score for s in scores} == {"same": 1.0, "other": 0.0}
    assert (
        registry.get_sample_value(
            "shadowtap_disagreements_total", {"target": "other", "scorer": "first"}
        )
        == 1
    )
