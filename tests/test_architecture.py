"""docs/architecture.md's import rules, checked on the source: layers stay layers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"duckdb", "pyarrow", "rapidfuzz", "jsonschema", "re2", "numpy"}
REQUEST_PATH = [
    *("handler", "forward", "shadow", "sampling", "normalize", "sse", "pipeline"),
    *("answer", "bounds", "budget", "receive", "shadow_request", "shadow_call"),
    # Every answer and every cross-dialect shadow goes through the dialect readers/renderers.
    *(f"dialects.{p.stem}" for p in sorted((ROOT / "proxy" / "dialects").glob("[!_]*.py"))),
]


def module_file(name: str) -> Path:
    if name.startswith("shadowtap.scorers."):
        return ROOT / "scorers" / (name.removeprefix("shadowtap.scorers.") + ".py")
    return ROOT / "proxy" / (name.removeprefix("shadowtap.").replace(".", "/") + ".py")


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when `path` is imported: module-level statements, not function bodies
    and not `if TYPE_CHECKING:` blocks."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                break
            if isinstance(inner, ast.Import):
                names |= {alias.name for alias in inner.names}
            elif isinstance(inner, ast.ImportFrom) and inner.module and not inner.level:
                names.add(inner.module)
    return names


def package_modules(folder: Path, package: str) -> list[str]:
    return sorted(
        f"{package}.{'.'.join(p.relative_to(folder).with_suffix('').parts)}"
        for p in folder.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    )


@pytest.mark.parametrize("module", [f"shadowtap.{m}" for m in REQUEST_PATH])
def test_the_request_path_imports_no_heavy_library_or_layer(module: str) -> None:
    imported = top_level_imports(module_file(module))
    assert not {name.split(".")[0] for name in imported} & HEAVY, imported
    layers = ("shadowtap.recorder", "shadowtap.report", "shadowtap.scorers", "shadowtap.demo")
    assert not [name for name in imported if name.startswith(layers)], imported


@pytest.mark.parametrize("module", package_modules(ROOT / "scorers", "shadowtap.scorers"))
def test_scorers_never_import_the_server_or_the_request_path(module: str) -> None:
    imported = top_level_imports(module_file(module))
    forbidden = {f"shadowtap.{m}" for m in [*REQUEST_PATH, "server", "admin", "cli"]}
    assert not imported & forbidden, imported


@pytest.mark.parametrize("module", package_modules(ROOT / "proxy" / "report", "shadowtap.report"))
def test_the_report_never_imports_the_request_path(module: str) -> None:
    imported = top_level_imports(module_file(module))
    forbidden = {f"shadowtap.{m}" for m in [*REQUEST_PATH, "server", "admin"]}
    assert not imported & forbidden, imported


def test_importing_the_server_loads_no_storage_scoring_or_report_library() -> None:
    code = (
        "import sys, shadowtap.server, shadowtap.cli;"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(ast.literal_eval(result.stdout))
    assert not loaded & HEAVY, loaded & HEAVY


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports anywhere (function bodies too), relative imports as written
    (`.test_x` keeps its leading dot)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            if not node.module:  # `from . import test_x` imports the module test_x
                names |= {base + alias.name for alias in node.names}
    return names


def imports_a_test_module(path: Path) -> list[str]:
    """Our test modules it imports: `tests.test_x`, `test_x` or relative `.test_x` (not a
    library's, such as `aiohttp.test_utils`)."""

    def ours(name: str) -> bool:
        return name.startswith(".") or name.startswith("tests.") or "." not in name

    return sorted(
        name
        for name in imported_modules(path)
        if ours(name) and name.split(".")[-1].startswith("test_")
    )


def test_test_modules_import_helpers_from_support_modules_never_from_each_other() -> None:
    # Importing a test module runs its module-level set-up again and couples two test files;
    # shared builders live in support modules (tests/fakes.py, tests/report_data.py, ...).
    offenders = {
        path.name: found
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        if (found := imports_a_test_module(path))
    }
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from tests.test_report_data import write", ["tests.test_report_data"]),
        ("import tests.test_cli as cli", ["tests.test_cli"]),
        ("def f():\n    from .test_x import y", [".test_x"]),
        ("from . import test_x", [".test_x"]),
        ("import test_cli", ["test_cli"]),
        ("from tests.report_data import write\nimport pytest", []),
        ("from aiohttp.test_utils import TestClient", []),
    ],
)
def test_the_test_import_check_sees_every_form(
    tmp_path: Path, source: str, found: list[str]
) -> None:
    path = tmp_path / "test_example.py"
    path.write_text(source, encoding="utf-8")
    assert imports_a_test_module(path) == found
