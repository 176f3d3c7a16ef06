"""`shadowtap demo`: the whole loop on simulated models, no API keys and no network.

Starts six simulated models (a primary and five candidates built to pass, to pass through
another provider's API, to fail on agreement, on broken tool calls and on errors), writes a
config into --out, runs shadowtap in-process in front of them, drives a few hundred requests
through the official `openai` client, stops shadowtap (flushing storage) and prints the report
with the paths of the DuckDB file and HTML report.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from shadowtap.config import Config, load_config
from shadowtap.demo import traffic
from shadowtap.demo.replay import replay_step
from shadowtap.demo.setup import CANDIDATES, ModelProcess, demo_config, to_toml

# How the simulated candidates were built to come out (see shadowtap.demo.profiles).
EXPECTED = {
    "fast-agree": "pass",
    "anthropic-agree": "pass",  # the same model on another provider's API: translated
    "paraphrase": "fail",
    "tool-breaker": "fail",
    "flaky": "fail",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=300, help="requests to send (300)")
    parser.add_argument(
        "--out",
        default="./shadowtap-demo",
        help="directory for config, DuckDB and report (./shadowtap-demo)",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="divide the models' delays by this (1 = real)"
    )
    parser.add_argument("--concurrency", type=int, default=10, help="requests in flight (10)")
    parser.add_argument("--seed", type=int, default=0, help="traffic mix and model noise")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass(slots=True)
class DemoResult:
    config_path: Path
    db_path: Path
    html_path: Path
    json_path: Path
    verdicts: dict[str, str]
    traffic: traffic.TrafficStats
    seconds: float


def _fresh(out: Path) -> Path:
    """Start from an empty database: pairs from an earlier run would blur this one's verdicts."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("shadowtap.duckdb", "shadowtap.duckdb.wal", "report.html", "report.json"):
        (out / name).unlink(missing_ok=True)
    return out.resolve()


async def run_demo(
    *,
    requests: int,
    out: Path,
    speed: float = 1.0,
    concurrency: int = 8,
    seed: int = 0,
    console: Console | None = None,
    show_progress: bool = True,
) -> DemoResult:
    from shadowtap.server import ShadowtapServer  # the demo command loads the proxy only when run

    console = console or Console()
    began = time.monotonic()
    out = await asyncio.to_thread(_fresh, out)
    models = await ModelProcess.start(speed=speed, seed=seed)
    try:
        config_path = out / "shadowtap.toml"
        text = to_toml(demo_config(models.urls, out, speed))
        header = "# Written by `shadowtap demo`; the model URLs were free ports of that run.\n"
        await asyncio.to_thread(config_path.write_text, header + text, encoding="utf-8")
        # Read back: the demo runs exactly what the file says, validated as `serve` would.
        config = await asyncio.to_thread(load_config, config_path)
        server = ShadowtapServer(config)
        await server.start()
        try:
            _show_start(console, models.urls, config_path, server.proxy_port, server.admin_port)
            stats = await traffic.drive(
                f"http://127.0.0.1:{server.proxy_port}/v1",
                requests=requests,
                concurrency=concurrency,
                seed=seed,
                console=console,
                show_progress=show_progress,
            )
            console.print(f"traffic: {stats.summary()}", soft_wrap=True)
            console.print("stopping shadowtap (waiting for shadows, flushing storage) ...")
        finally:
            await server.stop()
    finally:
        await models.stop()
    db_path = Path(config.storage.path)
    html_path, json_path = out / "report.html", out / "report.json"
    verdicts = await asyncio.to_thread(_report, config, db_path, html_path, json_path, console)
    # The loop's last step: this traffic, replayed to a model that was not there live.
    verdicts |= await replay_step(
        config_path, speed=speed, seed=seed, console=console, show_progress=show_progress
    )
    return DemoResult(
        config_path=config_path,
        db_path=db_path,
        html_path=html_path,
        json_path=json_path,
        verdicts=verdicts,
        traffic=stats,
        seconds=time.monotonic() - began,
    )


def _show_start(
    console: Console, urls: dict[str, str], config_path: Path, proxy_port: int, admin_port: int
) -> None:
    say = functools.partial(console.print, soft_wrap=True)  # paths stay whole for copying
    say("[bold]shadowtap demo[/bold]: simulated models, no API keys, no network")
    for name, url in urls.items():
        role = "primary  " if name == "primary" else "candidate"
        say(f"  {role} {name:<11} {url}")
    say(f"  config    {config_path}")
    say(f"  proxy     http://127.0.0.1:{proxy_port}/v1  (any OpenAI client works)")
    say(f"  metrics   http://127.0.0.1:{admin_port}/metrics  (live while it runs)")


def _report(
    config: Config, db_path: Path, html_path: Path, json_path: Path, console: Console
) -> dict[str, str]:
    """Build, print and save the report; returns each candidate's verdict."""
    from shadowtap.report import build_report, print_report, report_json, write_html

    report = build_report(
        db_path, config.gates, scorers=config.scorers, slice_by=config.report.slice_by
    )
    print_report(report, console)
    write_html(report, html_path)
    data: dict[str, Any] = report_json(report)
    json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return {name: entry["verdict"] for name, entry in data["candidates"].items()}


def _show_end(console: Console, result: DemoResult) -> bool:
    say = functools.partial(console.print, soft_wrap=True)  # paths stay whole for copying
    say(f"DuckDB file   {result.db_path}  (tables exchanges, responses, scores; view pairs)")
    say(f"HTML report   {result.html_path}")
    say(f"JSON report   {result.json_path}")
    say(f"again         shadowtap report --db {result.db_path} --config {result.config_path}")
    matched = all(result.verdicts.get(name) == EXPECTED[name] for name in CANDIDATES)
    expected = ", ".join(f"{name} {EXPECTED[name]}" for name in CANDIDATES)
    if matched:
        say(f"verdicts as the candidates were built ({expected}) in {result.seconds:.0f} s")
    else:
        got = ", ".join(f"{k} {v}" for k, v in sorted(result.verdicts.items()))
        say(f"[red]verdicts differ from the construction[/red]: expected {expected}; got {got}")
    return matched


def run(args: argparse.Namespace) -> int:
    """`shadowtap demo`: 0 when every verdict came out as the candidates were built."""
    from shadowtap.log import configure_logging

    configure_logging("warning")  # the demo's own output tells the story; keep JSON logs quiet
    console = Console()
    coro = run_demo(
        requests=args.requests,
        out=Path(args.out),
        speed=args.speed,
        concurrency=args.concurrency,
        seed=args.seed,
        console=console,
        show_progress=not args.no_progress,
    )
    try:
        import uvloop
    except ImportError:  # not built for every platform; asyncio's loop works too
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    return 0 if _show_end(console, result) else 1
