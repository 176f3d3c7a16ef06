"""The slow marking stays true to the files: every module tests/conftest.py names as slow
exists, so a renamed module cannot fall silently into `make check`'s fast set."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SLOW_MODULES

TESTS = Path(__file__).resolve().parent


def test_every_slow_module_exists_and_says_why() -> None:
    missing = sorted(name for name in SLOW_MODULES if not (TESTS / f"{name}.py").is_file())
    assert not missing, f"SLOW_MODULES names modules that do not exist: {missing}"
    assert all(reason.strip() for reason in SLOW_MODULES.values())
