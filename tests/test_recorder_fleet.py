"""A fleet: several `shadowtap serve` processes record into their own DuckDB files and roll into
one shared `parquet_dir`, with retention on. The report over the directory equals the report
over the union of what each recorded: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import openai
import orjson
from shadowtap.recorder import connect, parquet_relations
from shadowtap.recorder.schema import COLUMNS, TABLES

from tests.conftest import StartFake
from tests.serving import SHADOWTAP, free_port, wait_until_ready

SIDECARS = 3
REQUESTS = 24  # per sidecar
OLD_DAY = "2001-01-01"  # a retired sidecar's partition, long past retention


def sidecar_config(
    tmp_path: Path, index: int, primary: str, candidate: str, parquet_dir: Path
) -> tuple[Path, int, int, Path]:
    port, admin = free_port(), free_port()
    db = tmp_path / f"sidecar-{index}" / "shadowtap.duckdb"
    path = tmp_path / f"sidecar-{index}.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
        f'[primary]\nurl = "{primary}"\n'
        "[sampling]\nrate = 1.0\nmax_per_second = 0\n"
        f'[candidates.small]\nurl = "{candidate}"\n'
        "[secondary]\nrate = 1.0\n"
        '[scorers.similarity]\ntype = "text_similarity"\n'
        f'[storage]\npath = "{db}"\nparquet_dir = "{parquet_dir}"\nretention_days = 30\n'
        "flush_interval_ms = 50\nbatch_size = 7\n"
    )
    return path, port, admin, db


def plant_old_partition(parquet_dir: Path) -> None:
    """Parquet files from a sidecar long gone: retention (of any sidecar) deletes them."""
    con = connect(":memory:")
    for table in TABLES:
        folder = parquet_dir / table / f"date={OLD_DAY}"
        folder.mkdir(parents=True)
        con.execute(
            f"COPY (SELECT * FROM {table}) TO '{folder / 'retired.parquet'}' (FORMAT parquet)"
        )


async def drive(port: int, index: int) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=f"sk-fleet-client-{index}", max_retries=0
    )
    try:
        for i in range(REQUESTS):
            messages = [{"role": "user", "content": f"sidecar {index} question {i}"}]
            if i % 2:
                stream = await client.chat.completions.create(
                    model="m", messages=messages, stream=True
                )
                async for _chunk in stream:
                    pass
            else:
                await client.chat.completions.create(model="m", messages=messages)
    finally:
        await client.close()


def union_of(dbs: list[Path], target: Path) -> None:
    """One DuckDB file holding every sidecar's rows, as the report reads a single file."""
    con = connect(target)
    try:
        for i, db in enumerate(dbs):
            con.execute(f"ATTACH '{db}' AS s{i} (READ_ONLY)")
            for table in TABLES:
                cols = ", ".join(COLUMNS[table])
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM s{i}.{table}")
            con.execute(f"DETACH s{i}")
    finally:
        con.close()


async def report_json(*source: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        SHADOWTAP, "report", *source, "--json", stdout=-1, stderr=-1
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode in (0, 1), err.decode()  # 1: a candidate failed its gates
    report = orjson.loads(out)
    for volatile in ("generated_at", "source"):
        report.pop(volatile)
    return report


async def test_a_fleet_rolls_into_one_directory_with_nothing_lost_or_doubled(
    tmp_path: Path, start_fake: StartFake
) -> None:
    primary, candidate = await start_fake(), await start_fake("paraphrase")
    parquet_dir = tmp_path / "shared"
    plant_old_partition(parquet_dir)
    sidecars = [
        sidecar_config(tmp_path, i, primary.url, candidate.url, parquet_dir)
        for i in range(SIDECARS)
    ]
    processes = [
        await asyncio.create_subprocess_exec(
            SHADOWTAP, "serve", "--config", str(config), stdout=-1, stderr=-1, env=dict(os.environ)
        )
        for config, *_ in sidecars
    ]
    try:
        async with aiohttp.ClientSession() as session:
            for _, _, admin, _ in sidecars:
                # Three interpreters importing at once on a shared machine: a minute each.
                await wait_until_ready(session, admin, timeout_s=60)
        await asyncio.gather(*(drive(port, i) for i, (_, port, _, _) in enumerate(sidecars)))
        # All stop at once: their final rolls land in the same partitions together.
        for process in processes:
            process.send_signal(signal.SIGTERM)
        errors = await asyncio.gather(*(p.communicate() for p in processes))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for process, (_, err) in zip(processes, errors, strict=True):
        assert process.returncode == 0, err.decode()[-3000:] or "(no stderr)"
        assert b'"level": "error"' not in err, err.decode()[-2000:]

    dbs = [db for *_, db in sidecars]
    # Retention ran: the retired sidecar's day is gone, and with it nothing of ours.
    assert not list(parquet_dir.glob(f"*/date={OLD_DAY}"))
    assert not list(parquet_dir.rglob(".*"))  # no temporary file left behind

    con = duckdb.connect()
    for i, db in enumerate(dbs):
        con.execute(f"ATTACH '{db}' AS s{i} (READ_ONLY)")
    for table, relation in zip(TABLES, parquet_relations(parquet_dir), strict=True):
        cols = ", ".join(COLUMNS[table])
        union = " UNION ALL ".join(f"SELECT {cols} FROM s{i}.{table}" for i in range(SIDECARS))
        in_dbs = con.execute(f"SELECT {cols} FROM ({union}) ORDER BY ALL").fetchall()
        in_parquet = con.execute(f"SELECT {cols} FROM {relation} ORDER BY ALL").fetchall()
        assert in_parquet == in_dbs, table  # the same rows, each exactly once
    sampled = SIDECARS * REQUESTS
    [(exchanges, distinct)] = con.execute(
        f"SELECT count(*), count(DISTINCT request_id) FROM {parquet_relations(parquet_dir)[0]}"
    ).fetchall()
    assert exchanges == distinct == sampled
    con.close()

    union_db = tmp_path / "union.duckdb"
    union_of(dbs, union_db)
    from_parquet = await report_json("--parquet", str(parquet_dir))
    from_union = await report_json("--db", str(union_db))
    assert from_parquet == from_union
    assert from_parquet["candidates"]["small"]["pairs"] == sampled
