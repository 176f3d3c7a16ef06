"""The benches count a proxy's whole process tree: shadowtap's scorer workers are CPU and memory
its pod pays, so `cpu_seconds` and `memory_kb` must see a child's work, not only the parent's.
The child is real: a Python process that holds 64 MB and spins on a core."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.harness import cpu_seconds, descendants, memory_kb
from bench.peer_memory import rss_split_kb

MIB = 1024  # in kB, the unit of /proc
CHILD = """
import sys, time
held = bytearray(64 * 1024 * 1024)
for i in range(0, len(held), 4096):
    held[i] = 1  # touched: resident
print("ready", flush=True)
end = time.process_time() + 0.5
while time.process_time() < end:
    pass
print("spun", flush=True)
sys.stdin.read()
"""


def test_a_childs_memory_and_cpu_are_counted_with_its_parent() -> None:
    # The parent is a shell holding the child, so this test's own process is not measured.
    parent = subprocess.Popen(
        ["/bin/sh", "-c", f"{sys.executable} -c '{CHILD}'; :"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None and parent.stdin is not None
        assert parent.stdout.readline() == "ready\n"
        assert len(descendants(parent.pid)) == 1
        rss, peak = memory_kb(parent.pid)
        anon, _files = rss_split_kb(parent.pid)
        assert rss > 64 * MIB and peak >= rss  # the shell alone holds a few MB
        assert anon > 64 * MIB
        assert parent.stdout.readline() == "spun\n"
        deadline = time.monotonic() + 5
        while cpu_seconds(parent.pid) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.05)  # /proc's ticks land a moment after the spin
        assert cpu_seconds(parent.pid) >= 0.4
    finally:
        if parent.stdin is not None:
            parent.stdin.close()
        parent.wait(10)
