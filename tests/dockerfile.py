"""Reading deploy/Dockerfile and .dockerignore the way Docker does, for the deploy tests.

The image cannot be built here (no Docker engine); tests/test_deploy_image.py builds its
contents the same way. These tests pin what compose.yaml and the Kubernetes manifests rely on:
the config path, the data volume, the ports, the numeric non-root user, the health check.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.kustomize import REPO

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
