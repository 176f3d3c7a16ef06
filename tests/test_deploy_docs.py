"""docs/deploying.md and deploy/README.md say what the deploy files do."""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
from shadowtap.cli import build_parser
from shadowtap.server import SCORING_AFTER_GRACE_S

from tests.kustomize import (
    BASE,
    REPO,
    by_kind,
    config_text,
    pod_specs,
    render,
)


def deploying_section() -> str:
    return (REPO / "docs" / "deploying.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("document", ["docs/deploying.md", "deploy/README.md"])
def test_every_deploy_path_mentioned_exists(document: str):
    text = (
        deploying_section()
        if document == "docs/deploying.md"
        else (REPO / document).read_text(encoding="utf-8")
    )
    prefix = "" if document == "docs/deploying.md" else "deploy/"
    # Paths in the repo: deploy/... anywhere, and in deploy/README.md its table's first column.
    mentioned = set(re.findall(r"\b(deploy/[A-Za-z][\w./-]*[a-z/])", text))
    mentioned |= set(re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE))
    assert mentioned
    for path in mentioned:
        relative = path if path.startswith("deploy/") else prefix + path
        assert (REPO / relative).resolve().exists(), f"{document} mentions missing {path}"


def test_the_secret_commands_create_the_secrets_the_pod_reads():
    commands = re.findall(r"kubectl create secret generic [^`]+", deploying_section())
    secrets = {s["metadata"]["name"]: s for s in by_kind(render(BASE), "Secret")}
    created = {}
    for command in commands:
        words = shlex.split(command)
        key = next(w for w in words if w.startswith("--from-literal=")).split("=")[1]
        created[words[4]] = key
    assert created.keys() == secrets.keys(), "one command per Secret of the example"
    for name, key in created.items():
        assert key in secrets[name]["stringData"]


def test_the_grace_period_example_matches_the_manifests():
    base = render(BASE)
    config = tomllib.loads(config_text(base))
    shown = re.search(
        r"the example: (\d+) \+ (\d+) \+ (\d+), rounded up to (\d+)", deploying_section()
    )
    assert shown
    grace, scoring, flush, total = map(int, shown.groups())
    assert grace == config["server"]["shutdown_grace_s"]
    assert scoring == SCORING_AFTER_GRACE_S
    (spec,) = pod_specs(base)
    assert total == spec["terminationGracePeriodSeconds"] >= grace + scoring + flush


def test_the_fleet_report_command_is_accepted_by_the_cli():
    (command,) = re.findall(r"^\s*(shadowtap report --parquet .+)$", deploying_section(), re.M)
    words = shlex.split(command)[1:]
    args = build_parser(words[0]).parse_args(words)
    assert args.parquet == tomllib.loads(config_text(render(BASE)))["storage"]["parquet_dir"]
