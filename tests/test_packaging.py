"""The distribution installs one import package, `shadowtap`, and nothing under other names."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_holds_only_the_shadowtap_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("shadowtap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n.split("/")[0] for n in names if not n.startswith("shadowtap-")}
    assert packaged == {"shadowtap"}, packaged
    assert "shadowtap/py.typed" in names
    assert "shadowtap/scorers/base.py" in names and "shadowtap/recorder/schema.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "shadowtap = shadowtap.cli:main" in text
    assert "text_similarity = shadowtap.scorers.text_similarity:TextSimilarity" in text


def test_plugin_surface_is_importable_from_shadowtap_scorers() -> None:
    import shadowtap.scorers as public
    from shadowtap.scorers import base

    for name in ("CpuScorer", "IoScorer", "Pair", "Result", "Verdict", "ScorerOptions"):
        assert getattr(public, name) is getattr(base, name)


def test_old_top_level_names_are_not_installed() -> None:
    code = "import importlib.util as u; print(u.find_spec('proxy'), u.find_spec('scorers'))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "None None"
