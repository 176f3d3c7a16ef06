"""The demo's moving parts: the simulated models as a child process, and the shadowtap config.

The models run in their own process (`python -m shadowtap.demo.models`, exactly as the compose
stack runs them) so they use the second core and their delays are not distorted by the
proxy's and the traffic generator's work on the demo's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import orjson

CANDIDATES = ("fast-agree", "anthropic-agree", "paraphrase", "tool-breaker", "flaky")
# Candidates that speak another API than the primary (OpenAI chat): shadowtap translates.
CROSS_PROVIDER = {"anthropic-agree": {"dialect": "anthropic-messages", "max_tokens": 1024}}
SCORERS = (
    "text_similarity",
    "exact_match",
    "json_match",
    "tool_calls",
    "json_schema_valid",
    "refusal",
    "length_ratio",
)
# The gate reads text_similarity, which every pair has. Binary scorers (exact_match) carry
# too much sampling noise for a few hundred pairs to clear a 5-point drop either way, and the
# JSON and tool-call scorers see only the few dozen pairs of their request kinds: an all-agree
# sample that small cannot rule out a 5-point drop at 95%, so it would read "insufficient".
# All of them are still reported, just not gated on.
GATED_SCORERS = ["text_similarity"]


class ModelProcess:
    """`python -m shadowtap.demo.models` on free loopback ports, stopped with `stop()`."""

    def __init__(self, process: asyncio.subprocess.Process, urls: dict[str, str]) -> None:
        self.process = process
        self.urls = urls

    @classmethod
    async def start(cls, speed: float, seed: int, within_s: float = 30.0) -> ModelProcess:
        profiles = ",".join(f"{name}=0" for name in ("primary", *CANDIDATES))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shadowtap.demo.models",
            "--host",
            "127.0.0.1",
            "--profiles",
            profiles,
            "--speed",
            str(speed),
            "--seed",
            str(seed),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        urls: dict[str, str] = {}
        try:
            async with asyncio.timeout(within_s):
                while len(urls) < 1 + len(CANDIDATES):
                    line = await process.stdout.readline()
                    if not line:
                        raise RuntimeError("the simulated models exited before listening")
                    ready = orjson.loads(line)
                    urls[ready["profile"]] = ready["url"]
        except BaseException:
            await cls(process, urls).stop()
            raise
        return cls(process, urls)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(5):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()


def demo_config(urls: dict[str, str], out: Path, speed: float) -> dict[str, Any]:
    """The shadowtap config the demo runs with (also written to --out for reading)."""
    # Generous against normal answers even when the shared event loop is busy, yet well under
    # `flaky`'s hangs (120 s at any speed), which therefore end as shadow timeouts.
    timeout_s = round(max(2.0, 8.0 / speed), 3)
    candidates = {
        name: {
            "url": urls[name],
            "model": name,
            "timeout_s": timeout_s,
            **CROSS_PROVIDER.get(name, {}),
        }
        for name in CANDIDATES
    }
    return {
        "server": {
            "listen": "127.0.0.1:0",  # free ports: the demo prints the ones it got
            "admin_listen": "127.0.0.1:0",
            "log_level": "warning",
            "shutdown_grace_s": timeout_s + 5.0,
        },
        "primary": {"url": urls["primary"]},
        # Mirror everything and never shed: the demo wants every pair, and its traffic is small.
        "sampling": {"rate": 1.0, "max_inflight": 512, "max_per_second": 0},
        # Every request also goes to the primary's model again, so each gated scorer has as
        # many noise-floor pairs as candidate pairs (the drop's interval is then narrowest).
        "secondary": {"rate": 1.0, "timeout_s": timeout_s},
        "candidates": candidates,
        "scorers": {name: {"type": name} for name in SCORERS},
        "storage": {"path": str(out / "shadowtap.duckdb"), "bodies": "full"},
        # Why these verdicts come out (see shadowtap.demo.profiles for how each model is built):
        # fast-agree's agreement has the noise floor's distribution (drop ~0 < 0.05), its p95
        # latency is ~0.6x the primary's and it never errors (0 errors in ~180 pairs put the
        # anytime upper bound under 5%) -> pass. paraphrase's text similarity is ~0.4 under
        # the floor -> fail on agreement_drop. flaky errs on ~25% of requests, whose anytime
        # interval lies above 5% from ~150 requests on -> fail on error_rate.
        # tool-breaker matches the primary wherever text_similarity looks, but ~90% of its
        # tool calls are broken; at most 30% of tool-calling answers may be, decided on the
        # ~60 tool calls of a few hundred requests -> fail on invalid_tool_call_rate (the
        # others, whose calls are well-formed, pass it from ~46 calls on). The latency gate
        # allows 2x: at the demo's speed-ups a busy machine's scheduling noise is a large part
        # of each latency.
        "gates": {
            "max_agreement_drop": 0.05,
            "scorers": GATED_SCORERS,
            "max_p95_latency_ratio": 2.0,
            "max_error_rate": 0.05,
            "max_invalid_tool_call_rate": 0.3,
        },
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(config: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the demo's config (tables of scalars and lists, nested)."""
    lines: list[str] = []
    scalars = {k: v for k, v in config.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in config.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append(f"[{prefix}]")
    lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    for key, table in tables.items():
        if lines:
            lines.append("")
        lines.append(to_toml(table, f"{prefix}.{_key(key)}" if prefix else _key(key)).rstrip())
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else orjson.dumps(key).decode()
