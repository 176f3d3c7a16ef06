"""How many examples a Hypothesis property tries: all of them in `make test` (what CI runs),
a fifth in `make check`, the edit loop, which sets SHADOWTAP_QUICK_PROPERTIES=1."""

from __future__ import annotations

import os

QUICK = os.environ.get("SHADOWTAP_QUICK_PROPERTIES") == "1"


def examples(full: int) -> int:
    """`full` examples, or a fifth of them (at least 10) in the quick edit loop."""
    return max(10, full // 5) if QUICK else full
