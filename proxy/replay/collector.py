"""The garbage collector tuned for the span of a replay run (`quiet_collector`).

With the interpreter's defaults the collector took about an eighth of a replay's CPU
(bench/replay.py, fast fake, no scorers: ~500 ms of ~4 s for 10,000 requests): hundreds of
young collections, each set off when the objects of the requests in flight passed 700 new
containers, and full collections that walked every module and every page of requests loaded.
During the run, what was alive when it started (modules, config, the first pages) is frozen
out of collections, and a young collection waits for `YOUNG_THRESHOLD` new containers: the
collector then took ~10 ms. Reference counting still frees almost everything at once; only
cyclic garbage waits a little longer, at most a few thousand containers.

Example:

    with quiet_collector():
        await send_everything()
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 5_000  # new containers before a young collection (the interpreter's: 700)


@contextmanager
def quiet_collector(threshold: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Freeze what is alive and raise the young threshold; both restored on the way out."""
    previous = gc.get_threshold()
    # `unfreeze` thaws everything: a heap frozen before the run (server.tune_gc) stays frozen.
    frozen_before = gc.get_freeze_count() > 0
    gc.freeze()
    gc.set_threshold(max(threshold, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        if not frozen_before:
            gc.unfreeze()  # back into the oldest generation: collected as before the run
