"""proxy/replay/collector.py: the collector tuned for a run, and given back as it was."""

from __future__ import annotations

import gc

import pytest
from shadowtap.replay.collector import YOUNG_THRESHOLD, quiet_collector


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_run_freezes_the_heap_and_gives_the_collector_back_as_it_was() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), quiet_collector():
        assert gc.get_freeze_count() > 0  # what was alive at the start is never walked
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        raise RuntimeError("a run that fails")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_made_during_a_run_is_still_collected() -> None:
    with quiet_collector():
        for _ in range(4 * YOUNG_THRESHOLD):
            Cycle()
        assert gc.collect() < 4 * YOUNG_THRESHOLD  # the threshold collected most on its way
