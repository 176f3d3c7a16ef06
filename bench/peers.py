"""shadowtap beside its peers, in one run with the same load in front of the same upstream.

Peers: the bare floor (bench/harness.py's smallest aiohttp+uvloop pass-through), nginx
(`proxy_pass` to a keepalive upstream, one process), Envoy when an `envoy` binary is on PATH,
and shadowtap at 10% and 100% sampling with recording on, and at 10% with it off (the proxy's
own cost apart from the recorder's), mirroring to a second canned upstream. Each round
measures every peer in turn (the order rotates):

- throughput: closed loop, `--connections` clients (wrk when installed), requests per second;
- CPU per request: the CPU time (/proc) of the proxy's processes (shadowtap's scorer workers,
  nginx's workers) from the start of the load until every process of the run is idle again
  (`settle`: shadows in flight, scoring and recording finished), over the requests served;
- time to first streamed token at concurrency 1, measured once everything is idle: p50 over
  `--streams` streams, minus the same measured direct to the upstream in the same round;
- inter-chunk gap widening: each stream's first-to-last chunk span minus the direct span
  (median), spread over the upstream's gaps; and the p95 of the longest gap's widening.

Ratios are per round against the bare floor measured in the same round; the median is printed
with the range across rounds. `--long` adds the long-stream case and the large-prompt case
(bench/peer_memory.py); `--only large-prompts` (or `long-streams`) runs that case alone.
`--json FILE` keeps the figures for bench/render.py.

    .venv/bin/python bench/peers.py [--rounds 5] [--duration 5] [--connections 32]
                                    [--streams 200] [--long] [--streams-open 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peer_servers
from bench.harness import (
    ANSWER_TEXT,
    CHAT,
    PATH,
    STREAM_CHAT,
    cpu_seconds,
    settle,
    shadowtap_config,
    wait_ready,
)
from bench.peer_load import Throughput, loadgen_note, sequential_streams, throughput

# (name, sampling rate, recording): recording off shows the proxy's own cost apart from the
# recorder's (its writer thread runs in the same process)
SHADOWTAP_PEERS = (
    ("shadowtap 10%", 0.1, True),
    ("shadowtap 10%, recording off", 0.1, False),
    ("shadowtap 100%", 1.0, True),
)
STREAM_GAP_S = 0.002  # the canned upstream's wait between two SSE events
NOFILE = 20_000


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, memory, load average at the time."""
    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(int(memory) / 1024 / 1024, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def start_peers(
    work: Path, upstream: str, candidate: str, notes: list[str]
) -> dict[str, tuple[Any, str]]:
    """name -> (process or None for direct, base URL)."""
    peers: dict[str, tuple[Any, str]] = {"direct": (None, upstream)}
    peers["bare"] = peer_servers.bare(upstream, NOFILE)
    for name, starter in (("nginx", peer_servers.nginx), ("envoy", peer_servers.envoy)):
        process, url_or_reason = starter(upstream, work, NOFILE)
        if process is None:
            notes.append(f"{name}: {url_or_reason}")
        else:
            peers[name] = (process, url_or_reason)
    for name, rate, recording in SHADOWTAP_PEERS:
        storage: dict[str, Any] = {"enabled": False}
        if recording:
            storage = {"path": str(work / f"{name.split()[1].rstrip('%')}.duckdb")}
        config = shadowtap_config(
            upstream, {"url": candidate}, rate=rate, max_inflight=1000, storage=storage
        )
        process, url, _ = peer_servers.shadowtap(config, work, NOFILE)
        peers[name] = (process, url)
    return peers


async def one_round(
    peers: dict[str, tuple[Any, str]], args: argparse.Namespace, index: int, pids: list[int]
) -> tuple[dict[str, dict[str, float]], list[Throughput]]:
    names = list(peers)
    order = names[index % len(names) :] + names[: index % len(names)]
    figures: dict[str, dict[str, float]] = {}
    runs: list[Throughput] = []
    streams = {}
    for name in order:
        process, base = peers[name]
        url = base + PATH
        before = cpu_seconds(process.pid) if process else 0.0
        run = await throughput(url, CHAT, args.connections, args.duration)
        # What the load left behind (shadows in flight, scoring, recording) is its cost too,
        # and must not run under the streams: they measure concurrency 1.
        settled_s = await settle(pids)
        used = cpu_seconds(process.pid) - before if process else float("nan")
        if run.errors:
            raise RuntimeError(f"{name}: {run.errors} failed requests")
        runs.append(run)
        streams[name] = await sequential_streams(url, STREAM_CHAT, args.streams)
        if not all(s.complete for s in streams[name]):
            raise RuntimeError(f"{name}: a stream did not complete")
        figures[name] = {
            "rps": run.rps,
            "cpu_ms": 1000 * used / max(run.requests, 1),
            "settle_s": settled_s,
        }
    direct = streams["direct"]
    direct_first = statistics.median(s.first_s for s in direct)
    direct_span = statistics.median(s.span_s for s in direct)
    direct_gap = sorted(s.max_gap_s for s in direct)
    gaps = max(1, args.events - 1)
    for name, timed in streams.items():
        max_gaps = sorted(s.max_gap_s for s in timed)
        p95 = int(0.95 * (len(max_gaps) - 1))
        figures[name] |= {
            "ttft_ms": 1000 * statistics.median(s.first_s for s in timed),
            "added_ttft_ms": 1000 * (statistics.median(s.first_s for s in timed) - direct_first),
            "gap_widening_ms": 1000
            * (statistics.median(s.span_s for s in timed) - direct_span)
            / gaps,
            "max_gap_widening_p95_ms": 1000 * (max_gaps[p95] - direct_gap[p95]),
        }
    return figures, runs


def summarize(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        per = {k: [r[name][k] for r in rounds] for k in rounds[0][name]}
        entry: dict[str, Any] = {k: spread(v) for k, v in per.items()}
        if name != "direct":
            entry["rps_ratio"] = spread([r[name]["rps"] / r["bare"]["rps"] for r in rounds])
            entry["cpu_ratio"] = spread([r["bare"]["cpu_ms"] / r[name]["cpu_ms"] for r in rounds])
        summary[name] = entry
    return summary


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    def cell(entry: dict[str, float], digits: int = 2) -> str:
        return f"{entry['median']:.{digits}f} ({entry['min']:.{digits}f}-{entry['max']:.{digits}f})"

    print(
        f"{'peer':<30}{'req/s':>8}{'x bare (range)':>20}{'CPU ms/req':>11}"
        f"{'req/CPU x bare (range)':>24}{'TTFT +ms':>10}{'gap +ms':>9}{'p95 max gap +ms':>17}"
    )
    for name, s in summary.items():
        direct = name == "direct"
        print(
            f"{name:<30}{s['rps']['median']:>8.0f}"
            f"{'' if direct else cell(s['rps_ratio']):>20}"
            f"{'' if direct else format(s['cpu_ms']['median'], '.3f'):>11}"
            f"{'' if direct else cell(s['cpu_ratio']):>24}"
            f"{s['added_ttft_ms']['median']:>+10.3f}{s['gap_widening_ms']['median']:>+9.3f}"
            f"{s['max_gap_widening_p95_ms']['median']:>+17.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--streams", type=int, default=200, help="sequential streams per peer")
    parser.add_argument("--long", action="store_true", help="add long streams and large prompts")
    parser.add_argument("--streams-open", type=int, default=2000, help="with --long")
    parser.add_argument("--stream-seconds", type=float, default=20.0, help="with --long")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--only",
        choices=["large-prompts", "long-streams"],
        help="run only this part of --long, nothing else",
    )
    args = parser.parse_args()
    if args.only is not None:
        from bench import peer_memory

        part = args.only.replace("-", "_")
        only: dict[str, Any] = {"machine_before": machine()}
        only[part] = getattr(peer_memory, part)(args)
        only["machine_after"] = machine()
        print(
            f"load average {only['machine_before']['load_average']} before,"
            f" {only['machine_after']['load_average']} after"
        )
        if args.json:
            args.json.write_text(json.dumps(only, indent=2))
        return
    args.events = len(ANSWER_TEXT.split()) + 1  # one SSE event per word, then [DONE]
    peer_servers.raise_nofile(NOFILE)
    notes: list[str] = []
    result: dict[str, Any] = {"machine_before": machine(), "args": vars(args) | {"json": None}}
    children = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            upstream_process, upstream = peer_servers.role("upstream", str(STREAM_GAP_S))
            candidate_process, candidate = peer_servers.role("upstream", str(STREAM_GAP_S))
            children += [upstream_process, candidate_process]
            peers = start_peers(work, upstream, candidate, notes)
            children += [p for p, _ in peers.values() if p is not None]

            async def run() -> tuple[list[dict[str, dict[str, float]]], list[Throughput]]:
                for _, base in peers.values():
                    await wait_ready(base + PATH)
                for _, base in peers.values():  # warm-up: pools, caches, first batch
                    await throughput(base + PATH, CHAT, args.connections, 1.0)
                rounds, runs = [], []
                for index in range(args.rounds):
                    figures, used = await one_round(peers, args, index, [c.pid for c in children])
                    rounds.append(figures)
                    runs += used
                    print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
                return rounds, runs

            import uvloop

            rounds, runs = uvloop.run(run())
            result["peers"] = summarize(rounds)
            result["loadgen"] = loadgen_note(runs)
    finally:
        peer_servers.stop(children)
    result["notes"] = notes
    print_table(result["peers"])
    print(result["loadgen"])
    for note in notes:
        print(note)
    if args.long:
        from bench import peer_memory

        result["long_streams"] = peer_memory.long_streams(args)
        result["large_prompts"] = peer_memory.large_prompts(args)
    result["machine_after"] = machine()
    print(
        f"machine: {result['machine_after']['cores']} cores, {result['machine_after']['ram_gb']}"
        f" GB RAM, load average {result['machine_before']['load_average']} before,"
        f" {result['machine_after']['load_average']} after"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
