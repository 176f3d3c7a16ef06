"""Every YAML file of the repository passes yamllint with the repo's .yamllint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.dockerfile import (
    repo_files,
)
from tests.kustomize import (
    REPO,
)

YAMLLINT = Path(sys.executable).parent / "yamllint"


def yaml_files() -> list[str]:
    return [f for f in repo_files() if f.endswith((".yaml", ".yml")) or f == ".yamllint"]


def test_all_yaml_passes_yamllint():
    files = yaml_files()
    assert "deploy/compose.yaml" in files and "deploy/kubernetes/base/deployment.yaml" in files
    result = subprocess.run(
        [YAMLLINT, "--strict", "--format", "parsable", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_uses_the_repo_config(tmp_path: Path):
    # A line over yamllint's default 80 columns but under .yamllint's 120 passes, one over 120
    # fails: the lint is the repo's policy, and it can fail.
    ok = tmp_path / "ok.yaml"
    ok.write_text("key: " + "x" * 100 + "\n")
    too_long = tmp_path / "long.yaml"
    too_long.write_text("key: " + "x" * 130 + "\n")
    run = [YAMLLINT, "--strict", "--config-file", REPO / ".yamllint"]
    assert subprocess.run([*run, ok], capture_output=True).returncode == 0
    assert subprocess.run([*run, too_long], capture_output=True).returncode != 0
