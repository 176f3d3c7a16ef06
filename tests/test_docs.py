"""The README's links and the example config it tells a newcomer to copy are real."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from shadowtap.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_config_is_valid() -> None:
    environ = {"SMALL_KEY": "sk-small-key-123456", "SHADOWTAP_ADMIN_TOKEN": "t" * 32}
    config = load_config(ROOT / "docs" / "shadowtap.toml", environ)
    assert config.candidates["small"].model == "llama-3.1-8b"
    assert set(config.scorers) == {"similarity", "tools"}


def test_every_linked_doc_exists_and_every_doc_is_linked() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme))
    present = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert linked == present
    for command in ("make demo", "make test"):
        assert command in readme


# `proxy/shadow.py:Shadowing.fan_out_shadows`: a module file, then a name it defines (dotted:
# a class, then a name defined in its body).
CODE_REFERENCE = re.compile(r"\b((?:proxy|scorers)/[\w/]+\.py):([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
DOCS_NAMING_CODE = ("README.md", "docs/architecture.md")


def defined_names(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """Names a module or class body binds: functions, classes, assignments, annotated fields."""
    names: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names |= {n.id: node for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def unresolved(reference: tuple[str, str]) -> str | None:
    """Why `file:name` does not name something the file defines; None when it does."""
    file, dotted = reference
    path = ROOT / file
    if not path.is_file():
        return f"{file} does not exist"
    body: list[ast.stmt] = ast.parse(path.read_text(encoding="utf-8")).body
    for part in dotted.split("."):
        node = defined_names(body).get(part)
        if node is None:
            return f"{file} defines no {dotted}"
        body = node.body if isinstance(node, ast.ClassDef) else []
    return None


@pytest.mark.parametrize("doc", DOCS_NAMING_CODE)
def test_every_file_function_reference_in_the_docs_names_real_code(doc: str) -> None:
    references = set(CODE_REFERENCE.findall((ROOT / doc).read_text(encoding="utf-8")))
    assert len(references) >= 5, references  # the stages are named: the check checks something
    problems = sorted(filter(None, map(unresolved, references)))
    assert not problems, problems


def test_the_request_flow_names_each_stage_where_it_lives() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    flow = readme.partition("## How a request flows")[2].partition("\n## ")[0]
    named = {name.split(".")[-1] for _, name in CODE_REFERENCE.findall(flow)}
    stages = {"handle", "receive", "decide_sampling", "forward_primary", "fan_out_shadows"}
    assert stages | {"complete_exchange", "normalize_primary", "score", "record"} <= named


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        (("proxy/shadow.py", "fan_out"), "proxy/shadow.py defines no fan_out"),
        (("proxy/shadow.py", "Shadowing.nothing"), "proxy/shadow.py defines no Shadowing.nothing"),
        (
            ("proxy/shadow_call.py", "call_shadow.inner"),
            "proxy/shadow_call.py defines no call_shadow.inner",
        ),
        (("proxy/nowhere.py", "x"), "proxy/nowhere.py does not exist"),
        (("proxy/shadow.py", "Shadowing.fan_out_shadows"), None),
        (("proxy/shadow.py", "Shadowing.budget"), None),  # a dataclass field
        (("proxy/shadow_call.py", "DEFAULT_ANSWER_BYTES"), None),
    ],
)
def test_the_reference_check_fails_on_a_name_the_file_lacks(
    reference: tuple[str, str], problem: str | None
) -> None:
    assert unresolved(reference) == problem
