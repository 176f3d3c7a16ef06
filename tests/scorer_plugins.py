"""CPU scorer plug-ins that misbehave on demand, importable by spawned scoring workers.

Tests register them as real plug-ins (`register`: an entry point in a dist-info folder on
sys.path, which workers inherit), so they reach a worker exactly as a third-party scorer does.
What `Hostile` does is read from the target's answer text, so a test drives it through the
proxy by what it asks the fake upstreams (they quote the question in their answer):

* "spin"  — loops forever in Python;
* "sleep" — sleeps 60 s (a C call that never returns, as far as anyone can tell);
* "exit"  — `os._exit(7)`, a worker dying on its own;
* "segv"  — dereferences NULL: the worker dies of SIGSEGV;
* otherwise 1.0, with the worker's pid in `detail`.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from shadowtap.scorers import CpuScorer, Pair, Result, ScorerOptions, Verdict

if TYPE_CHECKING:  # workers import this module: keep pytest out of them
    import pytest


class Hostile(CpuScorer[ScorerOptions]):
    reads_request = False

    def score(self, pair: Pair) -> Result:
        text = pair.target.text or ""
        if "spin" in text:
            while True:
                pass
        if "sleep" in text:
            time.sleep(60)
        if "exit" in text:
            os._exit(7)
        if "segv" in text:
            ctypes.string_at(0)
        return Verdict(1.0, {"pid": os.getpid()})


class Raises(CpuScorer[ScorerOptions]):
    def score(self, pair: Pair) -> Result:
        raise RuntimeError("boom")


class OutOfRange(CpuScorer[ScorerOptions]):
    def score(self, pair: Pair) -> Result:
        return 1.5


class Sleepy(CpuScorer[ScorerOptions]):
    """0.3 s per pair, like a CPU-heavy scorer as far as the event loop can tell."""

    def score(self, pair: Pair) -> Result:
        time.sleep(0.3)
        return Verdict(1.0, {"pid": os.getpid()})


class Deliberate(CpuScorer[ScorerOptions]):
    """20 ms per pair: slower than a fast candidate answers, so pairs queue for the workers."""

    reads_request = False

    def score(self, pair: Pair) -> Result:
        time.sleep(0.02)
        return 1.0


class SeesRequest(CpuScorer[ScorerOptions]):
    """Reports whether the request reached it (a plug-in reads it unless it says otherwise)."""

    def score(self, pair: Pair) -> Result:
        return Verdict(1.0, {"request": pair.request})


class NotPicklable(CpuScorer[ScorerOptions]):
    def __init__(self, name: str, options: ScorerOptions) -> None:
        super().__init__(name, options)
        self.handle = lambda: None  # a lambda cannot be sent to a worker

    def score(self, pair: Pair) -> Result:
        return 1.0


class FailsInWorker(CpuScorer[ScorerOptions]):
    """Cannot be unpickled anywhere but where it was built: no worker can start with it."""

    def __init__(self, name: str, options: ScorerOptions) -> None:
        super().__init__(name, options)
        self.built_in = os.getpid()

    def __setstate__(self, state: dict[str, object]) -> None:
        if state["built_in"] != os.getpid():
            raise RuntimeError("this scorer cannot run in a worker")
        self.__dict__.update(state)

    def score(self, pair: Pair) -> Result:
        return 1.0


class Imports(CpuScorer[ScorerOptions]):
    """Reports the top-level packages and shadowtap modules its worker process has imported."""

    reads_request = False

    def score(self, pair: Pair) -> Result:
        import sys

        names = sorted(m for m in sys.modules if "." not in m or m.startswith("shadowtap."))
        return Verdict(1.0, {"modules": names})


PLUGINS = {
    "hostile": Hostile,
    "raises": Raises,
    "out_of_range": OutOfRange,
    "sleepy": Sleepy,
    "deliberate": Deliberate,
    "sees_request": SeesRequest,
    "not_picklable": NotPicklable,
    "imports": Imports,
}


@contextmanager
def registered(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register PLUGINS under their names in the `shadowtap.scorers` entry-point group."""
    dist = folder / "shadowtap_test_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shadowtap-test-plugins\n")
    lines = [f"{name} = {cls.__module__}:{cls.__name__}" for name, cls in PLUGINS.items()]
    (dist / "entry_points.txt").write_text("[shadowtap.scorers]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield
