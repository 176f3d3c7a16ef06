"""The README's links and the example config it tells a newcomer to copy are real."""

from __future__ import annotations

import re
from pathlib import Path

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
