"""The demo's last step: the recorded traffic replayed to a model that was not there live.

A newcomer sees the whole loop: traffic recorded while shadowing three candidates, then a
fourth (`next-release`, built like `fast-agree`: it should pass) evaluated on that same
traffic with `shadowtap replay`, its answers stored beside the live ones. The candidate is
added to the written config with `rate = 0` (never shadowed live, only replayed), so the
printed commands work as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import orjson
from rich.console import Console
from shadowtap.config import load_config

REPLAY_CANDIDATE = "next-release"
REPLAY_PROFILE = "fast-agree"


async def _start_model(speed: float, seed: int) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "shadowtap.demo.models", "--host", "127.0.0.1"),
        *("--profiles", f"{REPLAY_PROFILE}=0", "--speed", str(speed), "--seed", str(seed + 1)),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = await process.stdout.readline()
    if not line:
        raise RuntimeError("the simulated model exited before listening")
    return process, str(orjson.loads(line)["url"])


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def replay_step(
    config_path: Path, *, speed: float, seed: int, console: Console, show_progress: bool
) -> dict[str, str]:
    """Replay the recorded traffic to `next-release`; print its summary and verdict and the
    commands to run next. Returns {candidate: verdict}."""
    from shadowtap.replay.run import ReplayOptions, ReplayRunner
    from shadowtap.report import build_report, print_report

    process, url = await _start_model(speed, seed)
    try:
        timeout_s = round(max(2.0, 8.0 / speed), 3)
        table = "\n".join(
            [
                "",
                "# Only replayed: `rate = 0` never shadows it live.",
                f"[candidates.{REPLAY_CANDIDATE}]",
                f'url = "{url}"',
                f'model = "{REPLAY_CANDIDATE}"',
                f"timeout_s = {timeout_s}",
                "rate = 0.0",
                "",
            ]
        )
        with config_path.open("a", encoding="utf-8") as handle:
            handle.write(table)
        config = await asyncio.to_thread(load_config, config_path)
        console.print(
            f"[bold]replay[/bold]: the recorded traffic to {REPLAY_CANDIDATE}, a model that was "
            "not there live",
            soft_wrap=True,
        )
        runner = ReplayRunner(
            config,
            ReplayOptions(REPLAY_CANDIDATE, concurrency=8, progress=show_progress),
            db_path=config.storage.path,
            config_path=config_path,
        )
        summary = await runner.run(console)
    finally:
        await _stop(process)
    report = await asyncio.to_thread(
        build_report, Path(config.storage.path), config.gates, candidates=[REPLAY_CANDIDATE]
    )
    print_report(report, console)
    summary.show(console)
    again = (
        f"shadowtap replay --config {config_path} --db {config.storage.path} "
        f"--candidate {REPLAY_CANDIDATE}"
    )
    console.print(f"replay again  {again}  (sends nothing twice)", soft_wrap=True)
    return {REPLAY_CANDIDATE: report.candidates[REPLAY_CANDIDATE].verdict}
