"""deploy/Dockerfile and .dockerignore: hadolint-clean, and the image contract the deploy files use.

The image cannot be built here (no Docker engine); tests/test_deploy_image.py builds its
contents the same way. These tests pin what compose.yaml and the Kubernetes manifests rely on:
the config path, the data volume, the ports, the numeric non-root user, the health check.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_deploy_kustomize import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str


def instructions(text: str | None = None) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, each tagged with its stage."""
    text = DOCKERFILE.read_text(encoding="utf-8") if text is None else text
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result, stage = [], ""
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage = args.split()[-1] if " AS " in args.upper() else args
        result.append(Instruction(stage, keyword, " ".join(args.split())))
    return result


def final_stage() -> list[Instruction]:
    every = instructions()
    return [i for i in every if i.stage == every[-1].stage]


def exec_form(instruction: Instruction) -> list[str]:
    return json.loads(instruction.args)


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per .dockerignore line, with Docker's pattern semantics."""
    patterns = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((not negated, re.compile(regex)))
    return patterns


def in_build_context(relative: str) -> bool:
    """Whether Docker sends this path (relative to the repo root) in the build context.

    As in moby's patternmatcher: the last pattern that matches the path or one of its parent
    directories decides.
    """
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for exclude, regex in dockerignore_patterns():
        if any(regex.fullmatch(c) for c in candidates):
            included = not exclude
    return included


def repo_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [f for f in listed if (REPO / f).is_file()]


def build_context_files() -> list[str]:
    return [f for f in repo_files() if in_build_context(f)]


# ---------------------------------------------------------------------------------------------


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
