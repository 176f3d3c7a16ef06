"""quiet_collector gives back a heap someone else froze before the run still frozen: a run in
a process that froze its start-up heap (server.tune_gc does) must not thaw it into the
oldest generation, where every full collection walks it again."""

from __future__ import annotations

import gc

import pytest
from shadowtap.replay.collector import quiet_collector


def test_a_heap_frozen_before_the_run_stays_frozen_after_it() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with pytest.raises(KeyboardInterrupt), quiet_collector():
            raise KeyboardInterrupt  # a Ctrl-C mid-run
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
