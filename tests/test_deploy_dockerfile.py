"""deploy/Dockerfile and .dockerignore: hadolint-clean, and the image contract the deploy files use.

The image cannot be built here (no Docker engine); tests/test_deploy_image.py builds its
contents the same way. These tests pin what compose.yaml and the Kubernetes manifests rely on:
the config path, the data volume, the ports, the numeric non-root user, the health check.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.dockerfile import (
    DOCKERFILE,
    HADOLINT,
    Instruction,
    build_context_files,
    exec_form,
    final_stage,
    in_build_context,
    instructions,
)
from tests.kustomize import REPO


def test_hadolint_is_clean():
    result = subprocess.run(
        [HADOLINT, "--no-color", DOCKERFILE], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_mistake(tmp_path: Path):
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN apt-get install curl\n")
    result = subprocess.run([HADOLINT, "--no-color", sloppy], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_every_ignored_hadolint_rule_says_why():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = line.split("hadolint ignore=", 1)[1].split(maxsplit=1)[1:]
            previous = lines[number - 1].strip() if number else ""
            assert reason or previous.startswith("#"), f"line {number + 1}: ignored without why"


def test_two_stages_on_a_slim_python_311():
    every = instructions()
    froms = [i for i in every if i.keyword == "FROM"]
    assert len(froms) == 2
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", default)
    # Only the final stage's layers ship: no compiler, no wheels, no pip in its venv.
    final = final_stage()
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert "venv --without-pip" in runs and "--no-index" in runs
    assert "type=bind,from=build" in runs, "the wheels are mounted, not copied into a layer"
    assert not [i for i in final if i.keyword in ("COPY", "ADD")]


def test_the_runtime_contract():
    final = final_stage()

    def only(keyword: str) -> Instruction:
        (instruction,) = [i for i in final if i.keyword == keyword]
        return instruction

    assert re.fullmatch(r"\d+:\d+", only("USER").args) and not only("USER").args.startswith("0:")
    assert exec_form(only("VOLUME")) == ["/var/lib/shadowtap"]
    assert only("EXPOSE").args.split() == ["8080", "9464"]
    assert exec_form(only("ENTRYPOINT")) == ["shadowtap"]
    assert exec_form(only("CMD")) == ["serve", "--config", "/etc/shadowtap/shadowtap.toml"]
    healthcheck = only("HEALTHCHECK").args
    command = exec_form(Instruction("", "", healthcheck.split(" CMD ", 1)[1]))
    assert command[0] == "python" and "SHADOWTAP_HEALTHCHECK_URL" in command[-1]
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "SHADOWTAP_HEALTHCHECK_URL=http://127.0.0.1:9464/healthz" in env
    assert "PATH=/opt/shadowtap/bin:$PATH" in env


def test_build_context_has_what_the_build_copies_and_nothing_else():
    context = build_context_files()
    copies = [i.args.split() for i in instructions() if i.keyword == "COPY"]
    sources = [source for args in copies for source in args[:-1] if not source.startswith("--")]
    for source in sources:
        prefix = source.rstrip("/")
        assert any(f == prefix or f.startswith(prefix + "/") for f in context), source
    # Nothing local leaks into the context: data, virtualenvs, tests, deploy files.
    for path in context:
        top = path.split("/", 1)[0]
        assert top in {"pyproject.toml", "README.md", "requirements.lock", "proxy", "scorers"}, path
        assert "__pycache__" not in path and not path.endswith((".duckdb", ".pyc")), path
    assert not in_build_context(".venv/bin/python")
    assert not in_build_context("proxy/__pycache__/config.cpython-311.pyc")
    assert in_build_context("proxy/config.py")


@pytest.mark.parametrize(
    ("path", "sent"),
    [("scorers/base.py", True), ("tests/test_config.py", False), ("x.duckdb", False)],
)
def test_dockerignore_semantics(path: str, sent: bool):
    assert in_build_context(path) is sent


def test_the_health_check_needs_no_curl():
    # The health check is Python only (slim images have no curl) and fits one exec-form line.
    healthcheck = next(i for i in final_stage() if i.keyword == "HEALTHCHECK").args
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert shlex.split(healthcheck)[0].startswith("--interval=")
