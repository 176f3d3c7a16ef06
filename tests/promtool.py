"""Prometheus's own checker for our exposition: `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def promtool_check_metrics(exposition: bytes) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (apt-get install prometheus; .ci/run does it)")
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition.decode(),
        capture_output=True,
        text=True,
        timeout=30,
    )
