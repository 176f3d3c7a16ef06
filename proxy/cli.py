"""`shadowtap` command line: serve, check-config, report, replay, export, demo.

Each subcommand's heavy imports happen inside it, so `serve` never loads the report or demo.
Every command reads the config through `shadowtap.config` and lets a `ConfigError` reach
`main`, so one broken file gives one message (`shadowtap: config error: KEY: ...`, exit 2)
whichever command read it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import orjson
from shadowtap import __version__
from shadowtap.config import ConfigError, load_config, masked


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # resolved: scorer types and options checked here
    from shadowtap.log import add_secrets, configure_logging, secret_values
    from shadowtap.server import serve

    configure_logging(config.server.log_level)
    add_secrets(secret_values(config))  # configured keys and the admin token: never logged
    # `_created` series double the series count and no dashboard or rule reads them; this is
    # process-wide, so it belongs to the process that owns /metrics.
    from prometheus_client import disable_created_metrics

    disable_created_metrics()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(config, stop)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # uvloop is not built for every platform; asyncio's loop works too
        asyncio.run(main())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sys.stdout.write(orjson.dumps(masked(config), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from shadowtap.report.command import run

    return run(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from shadowtap.replay.command import run

    return run(args)


def cmd_export(args: argparse.Namespace) -> int:
    from shadowtap.export.command import run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from shadowtap.demo.run import run

    return run(args)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shadowtap",
        description="Mirror LLM traffic to candidate models and decide model swaps from it.",
    )
    parser.add_argument("--version", action="version", version=f"shadowtap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", required=True, help="path to shadowtap.toml")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check-config", help="validate a config; print it, secrets masked")
    check.add_argument("--config", required=True, help="path to shadowtap.toml")
    check.set_defaults(func=cmd_check_config)

    # Only the chosen subcommand's arguments are loaded: `serve` never imports report or demo.
    report = commands.add_parser("report", help="a model-swap decision from recorded pairs")
    report.set_defaults(func=cmd_report)
    if command == "report":
        from shadowtap.report.command import add_arguments as report_arguments

        report_arguments(report)

    replay = commands.add_parser(
        "replay", help="send recorded requests to a candidate now; score and store its answers"
    )
    replay.set_defaults(func=cmd_replay)
    if command == "replay":
        from shadowtap.replay.command import add_arguments as replay_arguments

        replay_arguments(replay)

    export = commands.add_parser(
        "export", help="recorded data as JSONL chat messages, a Batch API file or Parquet"
    )
    export.set_defaults(func=cmd_export)
    if command == "export":
        from shadowtap.export.command import add_arguments as export_arguments

        export_arguments(export)

    demo = commands.add_parser("demo", help="the whole loop on simulated models, no keys needed")
    demo.set_defaults(func=cmd_demo)
    if command == "demo":
        from shadowtap.demo.run import add_arguments as demo_arguments

        demo_arguments(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in words if not word.startswith("-")), None)
    args = build_parser(command).parse_args(words)
    try:
        return int(args.func(args))
    except ConfigError as error:
        print(f"shadowtap: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
