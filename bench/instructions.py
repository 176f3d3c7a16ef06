"""Instructions per request: the bare floor and shadowtap counted by valgrind, not timed.

On a machine shared with other work, CPU time per request moves by tens of percent from one
run to the next (bench/peers.py prints the ranges), more than most single changes to the hot
path. The instructions a process executes in user space do not depend on the machine's load:
this counts them with valgrind's cachegrind (`--cache-sim=no`) for each subject serving
exactly `--few` and then `--many` requests (`--concurrency` clients, the JSON chat request of
the other benchmarks) from the same fake upstream, and prints the slope — instructions per
request, start-up and shutdown cancelled out. Subjects: the bare aiohttp+uvloop pass-through
(bench/harness.py) and `shadowtap serve` with recording off at 0%, 10% and 100% sampling
(mirroring to a second fake upstream), and with recording on (a fresh DuckDB file per run) at
10% and 100%. Valgrind counts every thread of the process, so the recorder's writer thread
(DuckDB included) is counted with the rest; the rows still queued at SIGTERM are written at
shutdown, inside the count. Sampling is random: at 10% the sampled count, hence the figure,
varies by about 2% between runs; the 0% and 100% figures repeat to 0.1%.

Kernel time (the socket system calls) is not counted: the figure is the proxy's own work, the
part a change to its Python code can move. Valgrind runs the subject ~50x slower; a run takes
a few minutes.

    .venv/bin/python bench/instructions.py [--few 500] [--many 2500] [--concurrency 32]
                                           [--only "100%"]   # subjects whose name contains it
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

# (name, sampling rate or None for the bare floor, recording on)
SUBJECTS = (
    ("bare", None, False),
    ("shadowtap 0%", 0.0, False),
    ("shadowtap 10%", 0.1, False),
    ("shadowtap 100%", 1.0, False),
    ("shadowtap 10% rec", 0.1, True),
    ("shadowtap 100% rec", 1.0, True),
)
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


def subject_command(
    rate: float | None, recording: bool, port: int, upstreams: tuple[str, str], work: Path
) -> list[str]:
    """The command line of one run of a subject listening on `port` (a fresh database each)."""
    upstream, candidate = upstreams
    if rate is None:
        harness = str(Path(__file__).with_name("harness.py"))
        return [sys.executable, harness, "bare", str(port), upstream]
    storage: dict[str, object] = {"enabled": False}
    if recording:
        database = work / f"{port}-{free_port()}.duckdb"
        storage = {"path": str(database)}
    config = shadowtap_config(upstream, {"url": candidate}, rate=rate, storage=storage)
    config["server"] |= {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{free_port()}",
    }
    path = work / f"{port}-{free_port()}.toml"
    path.write_text(toml_dump(config))
    return [str(Path(sys.executable).parent / "shadowtap"), "serve", "--config", str(path)]


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
    parser.add_argument("--only", default="", help="run the subjects whose name contains this")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    processes = Processes()
    figures: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            upstreams = processes.role("upstream"), processes.role("upstream")
            for name, rate, recording in SUBJECTS:
                if args.only not in name:
                    continue
                port = free_port()
                url = f"http://127.0.0.1:{port}{PATH}"
                runs = [
                    counted(
                        subject_command(rate, recording, port, upstreams, work),
                        url,
                        requests,
                        args.concurrency,
                        work,
                    )
                    for requests in (args.few, args.many)
                ]
                few, many = runs
                figures[name] = (many - few) / (args.many - args.few)
                print(f"{name:<20}{figures[name] / 1000:>10.1f}k instructions/request", flush=True)
    finally:
        processes.stop()
    bare = figures.get("bare")
    if bare is None:
        return
    print(f"\nrequests per instruction x bare ({args.few} -> {args.many} requests):")
    for name, value in figures.items():
        print(f"{name:<20}{bare / value:>6.2f}x")


if __name__ == "__main__":
    main()
