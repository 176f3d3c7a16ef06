"""Every command reads shadowtap.toml through one loader: one broken file, one message.

`serve`, `check-config`, `report`, `replay` and `export` are run through the real entry point
(`shadowtap.cli.main`); a config error stops each before it opens a port or a database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from shadowtap.cli import main

GOOD = '[primary]\nurl = "https://api.openai.com"\n[candidates.c]\nurl = "http://127.0.0.1:1"\n'
EVERY = ("serve", "check-config", "report", "replay", "export")
# report reads [gates], [scorers] and [report] only; export reads [storage] only.
NOT_EXPORT = ("serve", "check-config", "report", "replay")
NOT_REPORT = ("serve", "check-config", "replay", "export")

BROKEN = [
    (
        "unknown scorer kind",
        GOOD + '[scorers.sim]\ntype = "text_similarty"\n',
        NOT_EXPORT,
        "shadowtap: config error: scorers.sim.type: unknown scorer type 'text_similarty'; known: ",
    ),
    (
        "unknown scorer option",
        GOOD + '[scorers.sim]\ntype = "text_similarity"\nthreshhold = 0.5\n',
        NOT_EXPORT,
        "shadowtap: config error: scorers.sim.threshhold: unknown key\n",
    ),
    (
        "scorer option of the wrong type",
        GOOD + '[scorers.sim]\ntype = "text_similarity"\nthreshold = "high"\n',
        NOT_EXPORT,
        "shadowtap: config error: scorers.sim.threshold: Input should be a valid number, "
        "unable to parse string as a number (got 'high')\n",
    ),
    (
        "gate out of range",
        GOOD + "[gates]\nconfidence = 1.5\n",
        NOT_EXPORT,
        "shadowtap: config error: gates.confidence: Input should be less than 1 (got 1.5)\n",
    ),
    (
        "credential header slice",
        GOOD + '[report]\nslice_by = ["header:authorization"]\n',
        NOT_EXPORT,
        "shadowtap: config error: report.slice_by: 'header:authorization': a credential header "
        "is never stored or sliced\n",
    ),
    (
        "bad storage.bodies",
        GOOD + '[storage]\nbodies = "some"\n',
        NOT_REPORT,
        "shadowtap: config error: storage.bodies: Input should be 'full', 'redacted' or 'none' "
        "(got 'some')\n",
    ),
    (
        "unset variable",
        GOOD + '[gates]\nscorers = ["${UNSET_FOR_CONFIG_COMMANDS}"]\n',
        NOT_EXPORT,
        "shadowtap: config error: gates.scorers[0]: environment variable "
        "UNSET_FOR_CONFIG_COMMANDS is not set\n",
    ),
    ("a misspelt table", GOOD + "[gate]\nmin_pairs = 40\n", EVERY, None),
    ("not TOML", GOOD + "[gates\n", EVERY, None),
]


def run(command: str, config: Path, tmp_path: Path) -> list[str]:
    db, out = str(tmp_path / "missing.duckdb"), str(tmp_path / "out.jsonl")
    extra = {
        "report": ["--db", db],
        "replay": ["--db", db, "--candidate", "c", "--no-progress"],
        "export": ["--db", db, "--out", out],
    }.get(command, [])
    return [command, "--config", str(config), *extra]


@pytest.mark.parametrize(
    ("config_text", "commands", "expected"),
    [pytest.param(text, commands, expected, id=name) for name, text, commands, expected in BROKEN],
)
def test_one_broken_config_gives_one_message_from_every_command(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config_text: str,
    commands: tuple[str, ...],
    expected: str | None,
) -> None:
    monkeypatch.delenv("UNSET_FOR_CONFIG_COMMANDS", raising=False)
    config = tmp_path / "shadowtap.toml"
    config.write_text(config_text, encoding="utf-8")
    messages = {}
    for command in commands:
        assert main(run(command, config, tmp_path)) == 2, command
        captured = capsys.readouterr()
        assert captured.out == "", command
        messages[command] = captured.err
    assert len(set(messages.values())) == 1, messages
    (message,) = set(messages.values())
    assert message.count("\n") == 1 and message.startswith("shadowtap: config error: ")
    if expected is not None:
        assert message.startswith(expected), message
    assert not (tmp_path / "missing.duckdb").exists()  # stopped before opening anything


def test_a_missing_config_file_gives_one_message_from_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    messages = set()
    for command in EVERY:
        assert main(run(command, missing, tmp_path)) == 2, command
        messages.add(capsys.readouterr().err)
    assert messages == {
        f"shadowtap: config error: cannot read {missing}: No such file or directory\n"
    }
