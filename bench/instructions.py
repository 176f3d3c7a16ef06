"""Instructions per request: the bare floor and shadowtap counted by valgrind, not timed.

On a machine shared with other work, CPU time per request moves by tens of percent from one
run to the next (bench/peers.py prints the ranges), more than most single changes to the hot
path. The instructions a process executes in user space do not depend on the machine's load:
this counts them with valgrind's cachegrind (`--cache-sim=no`) for each subject serving
exactly `--few` and then `--many` requests (`--concurrency` clients, the JSON chat request of
the other benchmarks) from the same fake upstream, and prints the slope — instructions per
request, start-up and shutdown cancelled out. Subjects: the bare aiohttp+uvloop pass-through
(bench/harness.py) and `shadowtap serve` with recording off at 0%, 10% and 100% sampling
(mirroring to a second fake upstream). Sampling is random: at 10% the sampled count, hence
the figure, varies by about 2% between runs; the 0% and 100% figures repeat to 0.1%.

Kernel time (the socket system calls) is not counted: the figure is the proxy's own work, the
part a change to its Python code can move. Valgrind runs the subject ~50x slower; a run takes
a few minutes.

    .venv/bin/python bench/instructions.py [--few 500] [--many 2500] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CHAT,
    PATH,
    Processes,
    free_port,
    shadowtap_config,
    toml_dump,
    wait_ready,
)

SUBJECTS = (("bare", None), ("shadowtap 0%", 0.0), ("shadowtap 10%", 0.1), ("shadowtap 100%", 1.0))
READY_S = 300.0  # start-up under valgrind takes a while


async def send(url: str, count: int, concurrency: int) -> None:
    """Exactly `count` requests, `concurrency` at a time; each must be answered 200."""
    left = count
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data=CHAT) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")

        await asyncio.gather(*(client() for _ in range(concurrency)))


async def ready(url: str, child: subprocess.Popen[bytes]) -> None:
    """Poll until the subject answers (one request, the same for every run)."""
    await wait_ready(url, READY_S, child, poll_s=0.5)


def counted(command: list[str], url: str, requests: int, concurrency: int, work: Path) -> int:
    """User-space instructions `command` executes serving `requests` requests, start to exit."""
    out = work / f"cachegrind-{free_port()}.out"
    valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen(
        [*valgrind, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        async def load() -> None:
            await ready(url, child)
            await send(url, requests, concurrency)

        asyncio.run(load())
    finally:
        child.send_signal(signal.SIGTERM)  # both subjects exit cleanly on it
        child.wait(timeout=120)
    match = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction count in {out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--few", type=int, default=500)
    parser.add_argument("--many", type=int, default=2500)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    processes = Processes()
    figures: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            upstream = processes.role("upstream")
            candidate = processes.role("upstream")
            harness = str(Path(__file__).with_name("harness.py"))
            shadowtap = str(Path(sys.executable).parent / "shadowtap")
            for name, rate in SUBJECTS:
                port = free_port()
                if rate is None:
                    command = [sys.executable, harness, "bare", str(port), upstream]
                else:
                    config = shadowtap_config(
                        upstream, {"url": candidate}, rate=rate, storage={"enabled": False}
                    )
                    config["server"] |= {
                        "listen": f"127.0.0.1:{port}",
                        "admin_listen": f"127.0.0.1:{free_port()}",
                    }
                    path = work / f"{port}.toml"
                    path.write_text(toml_dump(config))
                    command = [sys.executable, shadowtap, "serve", "--config", str(path)]
                url = f"http://127.0.0.1:{port}{PATH}"
                few = counted(command, url, args.few, args.concurrency, work)
                many = counted(command, url, args.many, args.concurrency, work)
                figures[name] = (many - few) / (args.many - args.few)
                print(f"{name:<16}{figures[name] / 1000:>10.1f}k instructions/request", flush=True)
    finally:
        processes.stop()
    bare = figures["bare"]
    print(f"\nrequests per instruction x bare ({args.few} -> {args.many} requests):")
    for name, value in figures.items():
        print(f"{name:<16}{bare / value:>6.2f}x")


if __name__ == "__main__":
    main()
