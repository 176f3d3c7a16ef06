"""The benchmark tools are correct: the bare floor relays bytes unchanged, the synthetic fleet
data has the recorder's Parquet layout and types, and the figures renderer's Markdown."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
from aiohttp import web
from shadowtap.config import GatesConfig
from shadowtap.recorder import migrate
from shadowtap.recorder.schema import parquet_relations
from shadowtap.report.build import build_report
from shadowtap.report.sources import open_parquet

from bench.fleet_data import generate
from bench.harness import bare_passthrough_app
from bench.peer_load import lua_string
from bench.render import END, START, render, replace_section

EVERY_BYTE = bytes(range(256)) * 64


def echo_app() -> web.Application:
    """Answers the request body back, or streams it in uneven chunks on /stream; 418 on /teapot."""

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/teapot":
            return web.Response(status=418, body=b"short and stout")
        if request.path != "/stream":
            return web.Response(body=body, content_type="application/octet-stream")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(body), 1000):
            await response.write(body[start : start + 1000])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def test_bare_floor_relays_every_byte_status_and_stream_unchanged(
    aiohttp_server: Any,
) -> None:
    upstream = await aiohttp_server(echo_app())
    bare = await aiohttp_server(bare_passthrough_app(str(upstream.make_url("")).rstrip("/")))
    async with aiohttp.ClientSession() as session:
        async with session.post(bare.make_url("/v1/x?q=1"), data=EVERY_BYTE) as response:
            assert response.status == 200
            assert await response.read() == EVERY_BYTE
        async with session.post(bare.make_url("/stream"), data=EVERY_BYTE) as response:
            assert response.content_type == "text/event-stream"
            assert await response.read() == EVERY_BYTE
        async with session.post(bare.make_url("/teapot"), data=b"") as response:
            assert response.status == 418
            assert await response.read() == b"short and stout"


def test_fleet_data_has_the_recorders_layout_types_and_pairs(tmp_path: Path) -> None:
    requests = generate(tmp_path, 2_200, days=3)
    assert requests == 2_000
    schema = duckdb.connect()
    migrate(schema)
    con = duckdb.connect()
    for table, relation in zip(
        ("exchanges", "responses", "scores"), parquet_relations(tmp_path), strict=True
    ):
        days = sorted(p.name for p in (tmp_path / table).iterdir())
        assert days == ["date=2026-01-05", "date=2026-01-06", "date=2026-01-07"]
        written = con.execute(f"DESCRIBE SELECT * EXCLUDE (date) FROM {relation}").fetchall()
        recorder = schema.execute(f"DESCRIBE {table}").fetchall()
        assert [(c[0], c[1]) for c in written] == [(c[0], c[1]) for c in recorder]
    source = open_parquet(tmp_path)
    roles = dict(source.con.execute("SELECT role, count(*) FROM pairs GROUP BY role").fetchall())
    assert roles == {"candidate": 2_000, "secondary": 200}
    # every JSON column parses, and the scores fold into the pairs' map
    assert source.con.execute(
        "SELECT count(*) FROM pairs WHERE json_valid(request_body) AND scores['similarity'] > 0"
        " AND role = 'candidate'"
    ).fetchall() == [(2_000 - 2_000 // 50,)]
    report = build_report(source, GatesConfig())
    assert list(report.candidates) == ["small"]
    assert report.candidates["small"].pairs == 2_000
    assert report.noise is not None and report.noise.pairs == 200


def test_lua_string_escapes_every_byte() -> None:
    assert lua_string(b'a"\n\\') == '"\\97\\34\\10\\92"'


def spread(median: float, low: float, high: float) -> dict[str, float]:
    return {"median": median, "min": low, "max": high}


def peers_json() -> dict[str, Any]:
    row = {
        "rps": spread(1000, 900, 1100),
        "cpu_ms": spread(0.2, 0.19, 0.21),
        "added_ttft_ms": spread(0.5, 0.4, 0.6),
        "gap_widening_ms": spread(0.01, 0.0, 0.02),
        "max_gap_widening_p95_ms": spread(0.1, -0.1, 0.2),
    }
    ratios = {"rps_ratio": spread(0.95, 0.9, 1.02), "cpu_ratio": spread(0.9, 0.85, 0.93)}
    return {
        "args": {"rounds": 3},
        "machine_before": {"load_average": [9.0, 8.0, 7.0]},
        "machine_after": {"load_average": [9.5, 8.0, 7.0]},
        "peers": {"direct": row, "bare": row | ratios, "shadowtap 10%": row | ratios},
        "loadgen": "load generator: wrk (1 thread), at most 0.10 of a core: not the bottleneck",
        "notes": ["envoy: not installed"],
        "long_streams": {
            "streams": 2_000,
            "seconds": 20.0,
            "bare": {"completed": 1_985, "failed": {"ServerDisconnectedError": 15}}
            | {"idle_mb": 40.0, "peak_mb": 90.0},
            "shadowtap 10%": {"completed": 2_000, "failed": {}, "idle_mb": 190.0, "peak_mb": 249.0}
            | {"idle_anon_mb": 54.0, "peak_anon_mb": 97.0}
            | {"idle_file_mb": 69.0, "peak_file_mb": 70.4},
            "peak_ratio": 2.77,
            "growth_ratio": 1.18,
            "peak_anon_ratio": 1.29,
        },
    }


def test_render_writes_a_dated_section_with_machine_tables_and_outputs(tmp_path: Path) -> None:
    (tmp_path / "peers.json").write_text(json.dumps(peers_json()))
    (tmp_path / "overhead.txt").write_text("capacity 0.90x\n```sneaky fence```\n")
    section = render(tmp_path, datetime(2026, 12, 2, 1, 40, tzinfo=UTC))
    lines = section.splitlines()
    assert lines[0] == START and lines[-1] == END
    assert "## Latest figures" in lines
    machine = next(line for line in lines if line.startswith("Measured "))
    assert re.fullmatch(
        r"Measured 2026-12-02 01:40 UTC at commit [0-9a-f]+(\+changes)?"
        rf" on {os.cpu_count()} cores, [\d.]+ GB RAM, load average"
        r" [\d.]+ / [\d.]+ / [\d.]+ \(1 / 5 / 15 min\) when rendered\.",
        machine,
    )
    assert "| bare | 1000 | 0.95 (0.90 to 1.02) | 0.200 | 0.90 (0.85 to 0.93) | +0.500" in section
    assert "| direct | 1000 |  |  |  | +0.500 (+0.400 to +0.600)" in section
    assert "envoy: not installed." in lines
    # a row measured before the anonymous / mapped-files split has those cells empty
    assert "| bare | 1,985/2,000 (not: 15 ServerDisconnectedError) | 40 | 90 |  |  |" in lines
    assert "| shadowtap 10% | 2,000/2,000 | 190 | 249 | 54 / 97 | 69 / 70 |" in lines
    assert (
        "Peak RSS shadowtap / bare: 2.77x; growth over idle RSS shadowtap / bare: 1.18x;"
        " peak anonymous RSS shadowtap / bare: 1.29x." in lines
    )
    # another benchmark's output is quoted whole, and cannot close the code block early
    assert section.count("```") == 2 and "'''sneaky fence'''" in section


def test_replace_section_swaps_only_the_marked_section(tmp_path: Path) -> None:
    document = "# Benchmarks\n\nprose\n"
    first = replace_section(document, f"{START}\nold\n{END}\n")
    assert first == f"# Benchmarks\n\nprose\n\n{START}\nold\n{END}\n"
    second = replace_section(first + "\n## After\n", f"{START}\nnew\n{END}\n")
    assert second == f"# Benchmarks\n\nprose\n\n{START}\nnew\n{END}\n\n## After\n"
